"""A checkpoint or run directory from elsewhere cannot make tsrx run code (issue 27, point 1).

The probe: a .pth that passes ``torch.load(weights_only=True)`` but whose stored config says
``type = "os:system", command = "touch MARKER"`` in some component table. ``os`` is always
imported, so the former "module:Name of an already imported module" rule ran the command.
A type is a registered name and nothing else; every entry point and every table a stored
config can hold is tried here, each asserting that the marker is never written.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_engine_helpers import tiny_data  # noqa: F401

from tsrx.errors import TsrxError
from tsrx.registry import ALL

EXPERIMENT = """
name = "probe"
[data]
root = "{root}"
train = {{ type = "textzoom", roots = ["train1"] }}
test.easy = {{ type = "textzoom", roots = ["test/easy"] }}
num_workers = 0
[model]
sr = {{ type = "srcnn", mask = true }}
[train]
selectors = ["best_psnr"]
[eval]
batch_size = 4
"""


def payload(marker: Path) -> dict:
    return {"type": "os:system", "command": f"touch {marker}"}


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_data):
    """A working checkpoint of a built-in SR model, its config, and a CRNN judge file."""
    from tsrx.checkpoint import make_checkpoint, save_checkpoint
    from tsrx.config.experiment import load_experiment
    from tsrx.models.build import build_model

    tmp = tmp_path_factory.mktemp("stored")
    (tmp / "e.toml").write_text(EXPERIMENT.format(root=tiny_data))
    config = load_experiment(tmp / "e.toml").runs[0].config
    torch.manual_seed(0)
    model = build_model(config, load_init=False)
    ckpt = make_checkpoint(model.state_dict(), config=config, step=1)
    save_checkpoint(tmp / "good.pth", ckpt)
    crnn = ALL["recognizer"].get("crnn")()
    judge_cfg = copy.deepcopy(config)
    judge_cfg["model"] = {"recognizer": {"type": "crnn"}}
    state = {f"recognizer.{k}": v for k, v in crnn.state_dict().items()}
    save_checkpoint(tmp / "judge.pth", make_checkpoint(state, config=judge_cfg, step=1))
    return {"tmp": tmp, "config": config, "ckpt": ckpt, "data": tiny_data}


def evil_checkpoint(good, folder: Path, dotted: str, marker: Path, name: str = "evil.pth") -> Path:
    """``good``'s checkpoint with the table at ``dotted`` replaced by the payload."""
    from tsrx.checkpoint import save_checkpoint

    ckpt = copy.deepcopy(good["ckpt"])
    node = ckpt["config"]
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if last == "selectors":
        node[last] = [payload(marker)]
    else:
        node[last] = payload(marker)
    folder.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(folder / name, ckpt)


def tsrx(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def refused(out: subprocess.CompletedProcess, marker: Path) -> None:
    assert not marker.exists(), "a stored config ran a command"
    assert out.returncode != 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert "os:system" in out.stderr, out.stderr


def test_no_registry_resolves_an_import_path(tmp_path):
    marker = tmp_path / "PWNED"
    for key, registry in ALL.items():
        assert "os:system" not in registry
        with pytest.raises(TsrxError, match="not an import path"):
            registry.get("os:system")
        with pytest.raises(TsrxError):
            registry.build(payload(marker), where=key)
    assert not marker.exists()


# -- one test per entry point (payload in model.sr, the table every entry point builds) ----
def test_ckpt_inspect(good, tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(good, tmp_path, "model.sr", marker)
    out = tsrx("ckpt", "inspect", evil, cwd=tmp_path)
    assert not marker.exists()
    # inspect reads the file as data: it may describe it, never build the named type
    assert "Traceback" not in out.stderr, out.stderr


def test_eval(good, tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(good, tmp_path, "model.sr", marker)
    refused(
        tsrx("eval", "--ckpt", evil, "--data", good["data"], "--device", "cpu", cwd=tmp_path),
        marker,
    )


def test_sr(good, tmp_path):
    from PIL import Image

    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(good, tmp_path, "model.sr", marker)
    Image.new("RGB", (64, 16), "white").save(tmp_path / "crop.png")
    refused(
        tsrx("sr", tmp_path / "crop.png", "--ckpt", evil, "-o", tmp_path / "o", cwd=tmp_path),
        marker,
    )


def test_load_model(good, tmp_path):
    import tsrx

    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(good, tmp_path, "model.sr", marker)
    with pytest.raises(TsrxError, match="os:system"):
        tsrx.load_model(evil)
    assert not marker.exists()


def test_judge_file(good, tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(good, tmp_path, "model.recognizer", marker, name="judge.pth")
    good_ckpt = good["tmp"] / "good.pth"
    out = tsrx(
        "eval", "--ckpt", good_ckpt, "--data", good["data"], "--device", "cpu",
        "--judge", f"crnn={evil}", cwd=tmp_path,
    )  # fmt: skip
    refused(out, marker)


def test_report_eval_missing(good, tmp_path):
    from tsrx.config.toml_write import dumps

    marker = tmp_path / "PWNED"
    run = tmp_path / "runs" / "probe" / "main"
    run.mkdir(parents=True)
    config = copy.deepcopy(good["config"])
    config["model"]["sr"] = payload(marker)
    (run / "config.toml").write_text(dumps(config))
    torch.save(good["ckpt"], run / "best_psnr_model.pth")
    out = tsrx("report", run.parent, "--eval-missing", "--format", "md", cwd=tmp_path)
    assert not marker.exists()
    assert "Traceback" not in out.stderr, out.stderr
    assert "os:system" in out.stdout + out.stderr, out.stdout + out.stderr


def test_viz_samples(good, tmp_path):
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(good, tmp_path, "model.sr", marker)
    out = tsrx(
        "viz", "samples", "--ckpt", evil, "--data", good["data"], "-n", "2",
        "-o", tmp_path / "s.png", cwd=tmp_path,
    )  # fmt: skip
    refused(out, marker)


# -- one test per table a stored config can hold, through load_model and evaluation --------
TABLES = [
    "model.sr",
    "model.recognizer",
    "model.head",
    "model.prior",
    "eval.judge",
    "eval.judges.mine",
    "data.train",
    "data.test.easy",
    "data.val.easy",
    "loss.sr",
    "loss.recognition",
    "loss.combiner",
    "train.selectors",
    "optim",
    "sched",
]


@pytest.mark.parametrize("dotted", TABLES)
def test_every_stored_table(good, tmp_path, dotted, monkeypatch):
    """Every way a stored config is read: `tsrx.load_model` and `tsrx eval` of the checkpoint
    (its own test splits and judges), and, for the same config as a run directory's
    config.toml, `tsrx report --eval-missing` and `tsrx config validate` (in process)."""
    from typer.testing import CliRunner

    import tsrx
    from tsrx.cli.main import app
    from tsrx.config.toml_write import dumps

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    evil = evil_checkpoint(good, tmp_path, dotted, marker)
    try:
        tsrx.load_model(evil)
    except TsrxError as exc:
        assert "os:system" in str(exc)
    assert not marker.exists(), f"{dotted}: load_model ran a command"

    run = tmp_path / "runs" / "probe" / "main"
    run.mkdir(parents=True)
    (run / "config.toml").write_text(dumps(torch.load(evil, weights_only=True)["config"]))
    (run / "best_psnr_model.pth").write_bytes(evil.read_bytes())
    commands = {
        "eval": ["eval", "--ckpt", str(evil), "--device", "cpu"],
        "report --eval-missing": ["report", str(run.parent), "--eval-missing", "-f", "md"],
        "config validate": ["config", "validate", str(run / "config.toml")],
    }
    for what, argv in commands.items():
        out = CliRunner().invoke(app, argv)
        assert not marker.exists(), f"{dotted}: tsrx {what} ran a command"
        if out.exception is not None and not isinstance(out.exception, SystemExit):
            # refused with a message (the payload's, or an earlier check of the config's)
            assert isinstance(out.exception, TsrxError), (what, out.exception)
