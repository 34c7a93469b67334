"""`tsrx ckpt inspect` and `tsrx ckpt compose` as a user runs them, on real files."""

from __future__ import annotations

import subprocess
import sys
from functools import partial

import pytest
import torch
from side_by_side import side_by_side
from typer.testing import CliRunner

from tsrx.checkpoint import load_checkpoint
from tsrx.cli.main import app
from tsrx.config.experiment import load_experiment
from tsrx.models.build import build_model

SMALL = """
name = "compose-test"
[data]
root = "data"
[model.sr]
type = "tsrn"
blocks = 1
hidden_units = 8
stn = false
[model.recognizer]
type = "crnn"
"""


def tsrx(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.fixture
def parts(workdir):
    """A TextZoom-format SR checkpoint and a meijieru-format CRNN file for the SMALL config."""
    (workdir / "small.toml").write_text(SMALL)
    src = build_model(load_experiment(workdir / "small.toml").runs[0].config)
    torch.save(
        {"state_dict_G": src.sr.state_dict(), "info": {"arch": "tsrn", "iters": 77}},
        workdir / "model_best.pth",
    )
    torch.save(src.recognizer.state_dict(), workdir / "crnn.pth")
    return src


def test_inspect_shows_format_parts_and_info(parts, workdir):
    out, crnn = side_by_side(
        partial(tsrx, "ckpt", "inspect", "model_best.pth", cwd=workdir),
        partial(tsrx, "ckpt", "inspect", "crnn.pth", "--keys", cwd=workdir),
    )
    assert out.returncode == 0, out.stderr
    assert "format textzoom" in out.stdout and "info.iters: 77" in out.stdout
    n_sr = sum(p.numel() for p in parts.sr.parameters())  # without STN no other float buffers
    assert f"{n_sr:,}" in out.stdout
    assert crnn.returncode == 0, crnn.stderr
    assert (
        "format crnn" in crnn.stdout
        and "recognizer.rnn.1.embedding.weight (37, 512)" in crnn.stdout
    )


def test_inspect_refuses_an_unsafe_file(workdir):
    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"x": Exploit()}, workdir / "evil.pth")
    out = tsrx("ckpt", "inspect", "evil.pth", cwd=workdir)
    assert out.returncode == 2
    assert "evil.pth is refused as unsafe" in out.stderr and "owned" not in out.stdout


def test_compose_saves_one_checkpoint_that_loads_in_one_shot(parts, workdir):
    result = CliRunner().invoke(
        app,
        [
            "ckpt",
            "compose",
            "--sr",
            "model_best.pth",
            "--recognizer",
            "crnn.pth",
            "--config",
            "small.toml",
            "--no-eval",
            "-o",
            "full.pth",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "recognizer" in result.output and "saved full.pth" in result.output
    obj = load_checkpoint(workdir / "full.pth")
    assert obj["format"] == "tsrx" and obj["step"] == 0
    assert obj["composed_from"] == {"sr": "model_best.pth", "recognizer": "crnn.pth"}
    assert obj["config"]["model"]["init"] == {}
    # a later run loads the one file: nothing missing, the parts' weights in place
    cfg = load_experiment(workdir / "small.toml", ["model.init.whole=full.pth"]).runs[0].config
    model = build_model(cfg)
    assert model.load_report.missing == [] and model.load_report.unexpected == []
    assert torch.equal(model.sr.block1[0].weight, parts.sr.block1[0].weight)
    assert torch.equal(model.recognizer.cnn.conv6.weight, parts.recognizer.cnn.conv6.weight)

    out = tsrx("ckpt", "inspect", "full.pth", cwd=workdir)
    assert out.returncode == 0, out.stderr
    n_sr = sum(p.numel() for p in parts.sr.parameters())
    assert "format tsrx" in out.stdout and f"{n_sr:,}" in out.stdout
    assert "model.sr: tsrn (blocks=1" in out.stdout and "experiment: compose-test" in out.stdout


def test_compose_evaluates_on_the_test_set(parts, workdir):
    from tsrx.data.synth import synthesize

    synthesize(workdir / "data", train=0, test=[2, 2, 2], seed=0)
    result = CliRunner().invoke(
        app,
        [
            "ckpt",
            "compose",
            "--sr",
            "model_best.pth",
            "--recognizer",
            "crnn.pth",
            "--config",
            "small.toml",
            "--device",
            "cpu",
            "-o",
            "full.pth",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "easy" in result.output and "hard" in result.output and "PSNR" in result.output
    metrics = load_checkpoint(workdir / "full.pth")["metrics"]["compose"]
    assert metrics["average"]["n"] == 6 and set(metrics["splits"]) == {"easy", "medium", "hard"}


def run_main(capsys, *args: str) -> tuple[int, str]:
    """The CLI entry point in-process: (exit code, stderr)."""
    from tsrx.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code, capsys.readouterr().err


def test_compose_errors_name_the_problem(parts, workdir, capsys):
    code, err = run_main(capsys, "ckpt", "compose", "-o", "x.pth")
    assert code == 2 and "at least one of --sr" in err
    code, err = run_main(capsys, "ckpt", "compose", "--sr", "crnn.pth", "--no-eval", "-o", "x.pth")
    assert code == 2 and "crnn checkpoint holds recognizer weights" in err
    code, err = run_main(
        capsys, "ckpt", "compose", "--sr", "model_best.pth", "--config", "small.toml", "-o", "x.pth"
    )
    assert code == 2 and "--no-eval" in err
    assert not (workdir / "x.pth").exists()


def test_inspect_counts_parameters_not_buffers_of_the_official_tsrn(workdir):
    """The official TSRN has 2,681,677 parameters; its TPS buffers are not parameters."""
    from tsrx.models.build import build_parts

    sr = build_parts({"sr": {"type": "tsrn"}})["sr"]
    assert sum(p.numel() for p in sr.parameters()) == 2_681_677
    torch.save({"state_dict_G": sr.state_dict(), "info": {"arch": "tsrn"}}, workdir / "tsrn.pth")
    out = tsrx("ckpt", "inspect", "tsrn.pth", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert "2,681,677" in out.stdout and "2,705,804" not in out.stdout


def test_load_model_returns_what_the_checkpoint_holds(parts, workdir):
    import tsrx
    from tsrx.checkpoint import make_checkpoint, save_checkpoint
    from tsrx.models.build import build_parts

    official = build_parts({"sr": {"type": "tsrn"}})["sr"]
    torch.save(
        {"state_dict_G": official.state_dict(), "info": {"arch": "tsrn"}}, workdir / "tsrn.pth"
    )
    sr = tsrx.load_model(workdir / "tsrn.pth")  # official TextZoom: the SR backbone
    assert type(sr).__name__ == "TSRN" and not sr.training
    for k, v in official.state_dict().items():
        assert torch.equal(sr.state_dict()[k], v), k
    rec = tsrx.load_model(workdir / "crnn.pth")  # meijieru CRNN: the recognizer
    assert (
        type(rec).__name__ == "CRNN" and rec.recognize(torch.rand(2, 3, 32, 128)).texts is not None
    )
    config = load_experiment(workdir / "small.toml").runs[0].config
    save_checkpoint(workdir / "joint.pth", make_checkpoint(parts.state_dict(), config=config))
    joint = tsrx.load_model(workdir / "joint.pth")  # tsrx, SR + recognizer: the joint model
    assert type(joint).__name__ == "JointModel" and not joint.training
    for k, v in parts.state_dict().items():
        assert torch.equal(joint.state_dict()[k], v), k
    torch.save({"sr.x": torch.zeros(1)}, workdir / "bare.pth")
    from tsrx.errors import TsrxError

    with pytest.raises(TsrxError, match="does not say which model it holds"):
        tsrx.load_model(workdir / "bare.pth")
