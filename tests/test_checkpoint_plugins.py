"""A checkpoint never makes tsrx import code (issue 14, point 1): the ``plugins`` list and
``module:Name`` types inside a .pth are data; what is missing is named with ``--plugin``."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap

import pytest
from test_engine_helpers import tiny_data  # noqa: F401

from tsrx.checkpoint_components import require_checkpoint_components
from tsrx.errors import TsrxError

EVIL = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")  # the side effect a hostile file would have

import torch
from torch import nn
from tsrx.registry import SR_BACKBONES


@SR_BACKBONES.register("evil_sr")
class EvilSR(nn.Module):
    def __init__(self, mask: bool = True):
        super().__init__()
        self.in_channels = 4 if mask else 3
        self.conv = nn.Conv2d(self.in_channels, self.in_channels, 3, padding=1)

    def forward(self, lr):
        up = nn.functional.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(up).clamp(0, 1)
"""

SAVE = """
import sys
from tsrx.config.experiment import load_experiment
from tsrx.checkpoint import make_checkpoint, save_checkpoint
from tsrx.engine.runfiles import plugin_records
from tsrx.models.build import build_model
cfg = load_experiment(sys.argv[1]).runs[0].config
model = build_model(cfg, load_init=False)
save_checkpoint(sys.argv[2], make_checkpoint(model.state_dict(), config=cfg, plugins=plugin_records()))
"""


def tsrx(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture
def evil_checkpoint(tmp_path):
    marker = tmp_path / "IMPORTED"
    evil = tmp_path / "plugin" / "evil.py"
    evil.parent.mkdir()
    evil.write_text(EVIL.format(marker=str(marker)))
    exp = tmp_path / "e.toml"
    exp.write_text(
        textwrap.dedent(f'''
        name = "e"
        plugins = ["{evil}"]
        [model]
        sr = {{ type = "evil_sr" }}
    ''')
    )
    ckpt = tmp_path / "it.pth"
    out = subprocess.run(
        [sys.executable, "-c", SAVE, str(exp), str(ckpt)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    marker.unlink()  # written while the checkpoint was made; from here on it must stay absent
    return ckpt, evil, marker


def test_eval_imports_nothing_a_checkpoint_names(tmp_path, evil_checkpoint, tiny_data):
    ckpt, evil, marker = evil_checkpoint
    out = tsrx(
        "eval", "--ckpt", str(ckpt), "--data", str(tiny_data), "--device", "cpu", cwd=tmp_path
    )
    assert not marker.exists(), "tsrx eval imported a file named inside the checkpoint"
    assert out.returncode == 2, out.stdout + out.stderr
    err = " ".join(out.stderr.split())
    assert "model.sr.type = 'evil_sr'" in err
    assert f"provided by file {evil} (pass --plugin {evil})" in err
    assert "tsrx never imports code a checkpoint names" in err and "Traceback" not in err


def test_eval_with_plugin_given_by_the_user(tmp_path, evil_checkpoint, tiny_data):
    ckpt, evil, marker = evil_checkpoint
    out = tsrx(
        "eval",
        "--ckpt",
        str(ckpt),
        "--data",
        str(tiny_data),
        "--device",
        "cpu",
        "--plugin",
        str(evil),
        "--batch-size",
        "6",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert marker.exists()  # the user asked for it
    assert "PSNR" in out.stdout or "psnr" in out.stdout.lower()


def test_module_types_and_plugin_lists_are_not_imported():
    sys.modules.pop("json.tool", None)
    cfg = {"plugins": ["json.tool"], "model": {"sr": {"type": "json.tool:main"}}}
    with pytest.raises(TsrxError, match=r"model.sr.type = 'json.tool:main'.*not an import path"):
        require_checkpoint_components(cfg, source="x.pth", recorded=[])
    assert "json.tool" not in sys.modules
    cfg = {"plugins": ["some_lab.heads"], "model": {"head": {"type": "lab_head"}}}
    # a Python caller (tsrx.load_model) is told about plugins=, not the CLI's --plugin
    with pytest.raises(
        TsrxError,
        match=r"module some_lab.heads \(pass plugins=\['some_lab.heads'\] to tsrx.load_model",
    ) as info:
        require_checkpoint_components(
            cfg,
            source="x.pth",
            recorded=[
                {
                    "name": "some_lab.heads",
                    "module": "some_lab.heads",
                    "package": "",
                    "version": "",
                    "builtin": False,
                    "components": ["head:lab_head"],
                }
            ],
        )
    assert "--plugin" not in str(info.value)
    cfg = {"model": {"sr": {"type": "tsrn"}}, "data": {"test": {"easy": {"type": "json.tool:X"}}}}
    with pytest.raises(TsrxError, match=r"data.test.easy.type = 'json.tool:X' \(dataset\)"):
        require_checkpoint_components(cfg, source="x.pth")
    assert "json.tool" not in sys.modules
    # the built-ins are installed plugins: a checkpoint naming them needs nothing
    require_checkpoint_components(
        {"model": {"sr": {"type": "tsrn"}, "head": {"type": "mlp"}}}, source="x.pth"
    )


def test_sr_takes_plugin_too(tmp_path, evil_checkpoint):
    from PIL import Image

    ckpt, evil, marker = evil_checkpoint
    Image.new("RGB", (64, 16), "white").save(tmp_path / "crop.png")
    out = tsrx(
        "sr",
        str(tmp_path / "crop.png"),
        "--ckpt",
        str(ckpt),
        "-o",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "pass --plugin" in out.stderr and not marker.exists(), out.stderr
    out = tsrx(
        "sr",
        str(tmp_path / "crop.png"),
        "--ckpt",
        str(ckpt),
        "-o",
        str(tmp_path / "out"),
        "--plugin",
        str(evil),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "crop.png").is_file()


def test_cli_wording_does_not_outlive_the_command():
    """A Python caller after an in-process CLI run is told about plugins=, not --plugin."""
    from tsrx.cli.main import main
    from tsrx.plugins import how_to_pass

    with contextlib.suppress(SystemExit):
        main(["plugins", "list"])
    assert "plugins=" in how_to_pass("m")
