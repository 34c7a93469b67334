"""`tsrx diff` between runs and checkpoints, and `--eval-missing` with its cache."""

from __future__ import annotations

import json

import typer
from test_report_fixtures import AVG_BEST_ACC, config, result, write_run
from typer.testing import CliRunner

from tsrx.engine import result_cache as cache
from tsrx.report.collect import collect
from tsrx.report.diff import differences
from tsrx.report.evaluate import evaluate_missing, missing
from tsrx.report.tables import build_report, selectors_of


def _app():
    from tsrx.cli import report_cmd

    app = typer.Typer()
    report_cmd.register(app)
    return app


def test_differences_are_dotted_and_symmetric():
    a, b = config("mlp", "avg"), config("mlp", "uncertainty")
    b["train"]["steps"] = 2000
    b["loss"]["combiner"]["init_s"] = 0.0
    assert differences(a, b) == [
        ("loss.combiner.init_s", "(absent)", 0.0),
        ("loss.combiner.type", "avg", "uncertainty"),
        ("train.steps", 1000, 2000),
    ]
    assert differences(a, a) == []


def test_cli_diff_runs_and_checkpoint(tmp_path):
    import torch

    runs = tmp_path / "runs"
    a = write_run(runs, "sidernn", "avg")
    b = write_run(runs, "sidernn", "uncertainty")
    res = CliRunner().invoke(_app(), ["diff", str(a), str(b), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["differences"] == [
        {"key": "loss.combiner.type", "a": "avg", "b": "uncertainty"}
    ]
    # a tsrx checkpoint carries its resolved config
    ckpt = tmp_path / "best_acc_model.pth"
    torch.save(
        {"format": "tsrx", "format_version": 1, "model": {}, "config": config("dense", "avg")}, ckpt
    )
    res = CliRunner().invoke(_app(), ["diff", str(a), str(ckpt)])
    assert res.exit_code == 0, res.output
    assert "model.head.type" in res.stdout and "sidernn" in res.stdout and "dense" in res.stdout
    res = CliRunner().invoke(_app(), ["diff", str(a), str(a / "config.toml")])
    assert "no differences" in res.stdout


def test_diff_refuses_what_is_not_a_run(tmp_path):
    import pytest
    import torch

    from tsrx.errors import TsrxError

    bare = tmp_path / "crnn.pth"
    torch.save({"cnn.weight": torch.zeros(1)}, bare)
    from tsrx.report.diff import config_of

    with pytest.raises(TsrxError, match="no embedded config|not a tsrx checkpoint"):
        config_of(bare)
    with pytest.raises(TsrxError, match="not a run directory"):
        config_of(tmp_path)


def test_eval_missing_evaluates_once_then_reads_the_cache(tmp_path):
    runs = tmp_path / "runs"
    r = result(AVG_BEST_ACC["mlp"], stored_average=False)
    d = write_run(runs, "mlp", "avg", val={"best_acc": r, "best_psnr": r})
    (d / "best_acc_model.pth").write_bytes(b"weights")
    calls = []

    def fake_evaluate(run, checkpoint, device, batch_size):
        calls.append((run.name, checkpoint.name, device, batch_size))
        return result(AVG_BEST_ACC["dense"], stored_average=False)

    coll = collect(runs / "joint")
    pending = missing(coll, selectors_of(coll.runs, None))
    assert [p.checkpoint.name for p in pending] == ["best_acc_model.pth"]  # best_psnr has no file
    written = evaluate_missing(pending, evaluate=fake_evaluate)
    assert len(calls) == 1 and written[0].parent == d / "eval"
    assert written[0].name.startswith("best_acc_model-")
    stored = json.loads(written[0].read_text())
    assert stored["cache"]["sha256"] == cache.file_sha256(d / "best_acc_model.pth")
    coll = collect(runs / "joint")
    assert missing(coll, selectors_of(coll.runs, None)) == []
    rep = build_report(coll, selectors=["best_acc"])
    row = rep.blocks[0].rows[0]
    assert row.result.source == "test" and row.cells["E-ACC"] == 0.7024
    # another eval config is another cache entry
    assert missing(coll, selectors_of(coll.runs, None), {"batch_size": 10}) != []


def test_cli_eval_missing_uses_the_cache(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    r = result(AVG_BEST_ACC["mlp"], stored_average=False)
    d = write_run(runs, "mlp", "avg", val={"best_acc": r})
    (d / "best_acc_model.pth").write_bytes(b"weights")
    calls = []

    def fake(run, checkpoint, device="cpu", batch_size=None):
        calls.append(checkpoint)
        return result(AVG_BEST_ACC["sidernn"], stored_average=False)

    monkeypatch.setattr("tsrx.report.evaluate.evaluate_checkpoint", fake)
    for _ in range(2):
        res = CliRunner().invoke(
            _app(), ["report", str(runs), "--eval-missing", "--format", "json"]
        )
        assert res.exit_code == 0, res.output
    assert len(calls) == 1
    block = json.loads(res.stdout)["blocks"][0]
    assert block["source"] == "test" and block["rows"][0]["values"]["E-ACC"] == 0.7116
