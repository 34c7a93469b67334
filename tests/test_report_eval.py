"""`tsrx report --eval-missing` with the real engine: a bicubic SR checkpoint in a run directory."""

from __future__ import annotations

import json

import pytest
import typer
from test_viz_fixtures import sr_only_ckpt, synth_root  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from tsrx.report.collect import collect
from tsrx.report.render import to_rich
from tsrx.report.tables import build_report


def _app():
    from tsrx.cli import report_cmd

    app = typer.Typer()
    report_cmd.register(app)
    return app


@pytest.mark.slow
def test_eval_missing_with_the_engine_then_cached(tmp_path, sr_only_ckpt):
    import shutil

    import torch

    from tsrx.config.toml_write import dumps

    run = tmp_path / "runs" / "viz" / "main"
    run.mkdir(parents=True)
    config = torch.load(sr_only_ckpt, weights_only=True)["config"]
    (run / "config.toml").write_text(dumps(config))
    (run / "status.json").write_text(
        json.dumps({"state": "completed", "step": 0, "total_steps": 0})
    )
    shutil.copy(sr_only_ckpt, run / "best_psnr_model.pth")
    res = CliRunner().invoke(
        _app(),
        ["report", str(run), "--selector", "best_psnr", "--eval-missing", "--format", "json"],
    )
    assert res.exit_code == 0, res.output
    cached = list((run / "eval").glob("best_psnr_model-*.json"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    block = json.loads(res.stdout)["blocks"][0]
    assert block["source"] == "test" and block["protocol"] == "textzoom (batch 50)"
    values = block["rows"][0]["values"]
    assert (
        values["E-ACC"] is None and 5 < values["A-PSNR"] < 60
    )  # no reader: no accuracy, never a guess
    res = CliRunner().invoke(_app(), ["report", str(run), "--eval-missing", "--format", "md"])
    assert res.exit_code == 0, res.output
    assert "every checkpoint already has a cached test result" in res.output
    assert cached[0].stat().st_mtime_ns == stamp


def test_rich_splits_into_three_tables_when_narrow(tmp_path):
    from test_report_fixtures import notebook_grid

    rep = build_report(
        collect(notebook_grid(tmp_path / "runs")), rows="head", selectors=["best_acc"]
    )
    from rich.table import Table

    wide = [r for r in to_rich(rep, 200) if isinstance(r, Table)]
    narrow = [r for r in to_rich(rep, 80) if isinstance(r, Table)]
    assert len(wide) == 2 and len(narrow) == 6
    assert [c.header for c in narrow[1].columns] == ["head", "E-PSNR", "M-PSNR", "H-PSNR", "A-PSNR"]
