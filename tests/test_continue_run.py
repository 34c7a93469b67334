"""A finished run continued to more steps (`tsrx train --resume --set train.steps=N`) ends
exactly where the run that trained N steps from the start ends (issue 26)."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from test_engine_helpers import metrics, tiny_data, tiny_plugin, weights, write_experiment  # noqa: F401
from typer.testing import CliRunner

from tsrx.config.experiment import load_experiment
from tsrx.errors import TsrxError
from tsrx.launch.rundir import prepare_run_dir

# dropout on: the random streams must continue exactly too
SETS = [
    "model.sr.dropout=0.2",
    "train.val_every=10",
    "train.ckpt_every=10",
    "train.log_every=1",
]


def _prepare(exp, runs_dir, steps, **kw):
    (run,) = load_experiment(exp, [*SETS, f"train.steps={steps}"]).runs
    return prepare_run_dir(run, runs_dir, command=["test"], **kw)


def _train(run_dir):
    from tsrx.engine.run import run_training

    return run_training(run_dir, device="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data, tiny_plugin):
    root = tmp_path_factory.mktemp("continue")
    exp = write_experiment(root, tiny_data, tiny_plugin)
    straight = _prepare(exp, root / "straight", 40)
    assert _train(straight)["state"] == "completed"
    continued = _prepare(exp, root / "continued", 20)
    first = _train(continued)
    assert first["state"] == "completed" and first["step"] == 20
    assert _prepare(exp, root / "continued", 40, resume=True) == continued
    second = _train(continued)
    return {"exp": exp, "root": root, "straight": straight, "continued": continued, "2nd": second}


def test_continued_run_is_bit_identical_to_the_straight_run(runs):
    straight, continued = runs["straight"], runs["continued"]
    assert runs["2nd"]["state"] == "completed" and runs["2nd"]["step"] == 40
    a, b = weights(straight / "last.pth"), weights(continued / "last.pth")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = metrics(straight, "train"), metrics(continued, "train")
    assert [m["step"] for m in tb] == list(range(1, 41))
    for x, y in zip(ta, tb):
        x.pop("samples_per_s"), y.pop("samples_per_s")
        assert x == y
    assert metrics(straight, "val") == metrics(continued, "val")
    assert [m["resumed"] for m in metrics(continued, "run")] == [False, True]
    sa = json.loads((straight / "summary.json").read_text())
    sb = json.loads((continued / "summary.json").read_text())
    assert sa["best"] == sb["best"] and sa["final"] == sb["final"]
    assert sb["total_steps"] == 40 and sb["state"] == "completed"
    ba, bb = weights(straight / "best_psnr_model.pth"), weights(continued / "best_psnr_model.pth")
    assert all(torch.equal(ba[k], bb[k]) for k in ba)
    status = json.loads((continued / "status.json").read_text())
    assert (status["state"], status["step"], status["total_steps"]) == ("completed", 40, 40)
    meta = json.loads((continued / "meta.json").read_text())
    assert [c["train.steps"] for c in meta["continued"]] == [[20, 40]]


def test_more_steps_without_resume_is_refused_naming_the_flag(runs):
    with pytest.raises(TsrxError, match="train.steps: 40 -> 60"):
        _prepare(runs["exp"], runs["root"] / "continued", 60)


def test_resume_refuses_other_changes_and_missing_runs(runs):
    (run,) = load_experiment(runs["exp"], [*SETS, "train.steps=60", "train.batch_size=4"]).runs
    with pytest.raises(TsrxError, match=r"differs in train.batch_size: 8 -> 4; a continued run"):
        prepare_run_dir(run, runs["root"] / "continued", resume=True, command=["test"])
    with pytest.raises(TsrxError, match="holds no run to continue"):
        _prepare(runs["exp"], runs["root"] / "nowhere", 60, resume=True)
    with pytest.raises(TsrxError, match="--force and --new start another one"):
        _prepare(runs["exp"], runs["root"] / "continued", 60, resume=True, force=True)


def test_fewer_steps_than_done_is_an_error(tmp_path, runs):
    import shutil

    copy = tmp_path / "runs" / "tiny" / "main"
    shutil.copytree(runs["continued"], copy)
    (copy / ".writer.lock").unlink(missing_ok=True)
    assert _prepare(runs["exp"], tmp_path / "runs", 30, resume=True) == copy
    with pytest.raises(TsrxError, match="is at step 40, past train.steps = 30"):
        _train(copy)


def test_schedule_that_depends_on_the_total_is_named(tmp_path, tiny_data, tiny_plugin, caplog):
    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, extra='\n[sched]\ntype = "cosine"\n')
    run_dir = _prepare(exp, tmp_path / "runs", 4)
    _train(run_dir)
    _prepare(exp, tmp_path / "runs", 6, resume=True)
    with caplog.at_level(logging.WARNING, logger="tsrx"):
        assert _train(run_dir)["step"] == 6
    assert "[sched] cosine depends on train.steps: steps 1-4 followed the 4-step" in caplog.text


def test_cli_resume_flag_continues_a_finished_run(tmp_path, tiny_data, tiny_plugin, monkeypatch):
    from tsrx.cli.main import app

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin)
    monkeypatch.chdir(tmp_path)
    args = ["train", str(exp), *[f"--set={s}" for s in SETS]]
    assert CliRunner().invoke(app, [*args, "--set=train.steps=4"]).exit_code == 0
    refused = CliRunner().invoke(app, [*args, "--set=train.steps=6"])
    assert refused.exit_code != 0
    out = CliRunner().invoke(app, [*args, "--set=train.steps=6", "--resume"])
    assert out.exit_code == 0, out.output
    run_dir = tmp_path / "runs" / "tiny" / "main"
    assert [m["step"] for m in metrics(run_dir, "train")] == [1, 2, 3, 4, 5, 6]
    assert torch.load(run_dir / "last.pth", weights_only=True)["step"] == 6
