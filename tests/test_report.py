"""`tsrx report` from fixture run directories with the lab notebook's numbers."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from functools import partial

import pytest
import typer
from side_by_side import side_by_side
from test_report_fixtures import (
    AVG_BEST_ACC,
    HEADS,
    UNC_BEST_ACC,
    config,
    notebook_grid,
    result,
    write_run,
)
from typer.testing import CliRunner

from tsrx.errors import TsrxError
from tsrx.report.collect import collect
from tsrx.report.render import to_csv, to_json, to_markdown
from tsrx.report.tables import build_report, recomputed_average

# The notebook's "avg loss, best_acc_model.pth" table, E/M/H as recorded, A recomputed
# from them weighted by n = 1619/1411/1343; best value per column in bold.
NOTEBOOK_AVG_BEST_ACC = """\
### best_acc_model.pth · combiner=avg
protocol: textzoom (batch 50) · recognizer: crnn (crnn.pth) · values: test results (eval/ cache)

| head | E-ACC | M-ACC | H-ACC | A-ACC | E-PSNR | M-PSNR | H-PSNR | A-PSNR | E-SSIM | M-SSIM | H-SSIM | A-SSIM |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| dense | 0.7024 | **0.5539** | **0.3939** | 0.5597 | 22.9425 | 19.6690 | **20.6816** | 21.1919 | 0.7886 | **0.5313** | 0.6212 | 0.6542 |
| mlp | 0.6949 | 0.5367 | 0.3902 | 0.5503 | 23.4046 | **19.7867** | 20.5768 | **21.3688** | **0.7983** | 0.5276 | 0.6223 | **0.6569** |
| sidernn | **0.7116** | 0.5518 | 0.3924 | **0.5620** | 23.2228 | 19.5888 | 20.5785 | 21.2382 | 0.7960 | 0.5267 | **0.6229** | 0.6559 |
| sidernn+mlp | 0.6900 | 0.5489 | 0.3931 | 0.5533 | **23.4609** | 19.6837 | 20.5425 | 21.3459 | 0.7908 | 0.5248 | 0.6155 | 0.6511 |
"""


def _block(report, selector, **group):
    hits = [b for b in report.blocks if b.selector == selector and b.group == group]
    assert len(hits) == 1, [(b.selector, b.group) for b in report.blocks]
    return hits[0]


def test_notebook_table_in_markdown(tmp_path):
    rep = build_report(
        collect(notebook_grid(tmp_path / "runs")), rows="head", selectors=["best_acc"]
    )
    md = to_markdown(rep)
    assert md.startswith(NOTEBOOK_AVG_BEST_ACC)
    assert [b.title for b in rep.blocks] == [
        "best_acc_model.pth · combiner=avg",
        "best_acc_model.pth · combiner=uncertainty",
    ]


def test_rows_by_full_key_and_by_other_axis(tmp_path):
    coll = collect(notebook_grid(tmp_path / "runs"))
    by_key = build_report(coll, rows="model.head.type", selectors=["best_acc_model.pth"])
    assert [r.label for r in by_key.blocks[0].rows] == list(HEADS)
    by_comb = build_report(coll, rows="combiner", selectors=["best_acc"])
    assert [b.group for b in by_comb.blocks] == [{"head": h} for h in HEADS]
    last = by_comb.blocks[-1]
    assert [r.label for r in last.rows] == ["avg", "uncertainty"]
    assert [round(r.cells["E-ACC"], 4) for r in last.rows] == [0.6900, 0.6962]


def test_stored_average_that_does_not_follow_is_flagged(tmp_path):
    """The notebook's uncertainty/sidernn+mlp A-ACC 0.5532 vs 0.5549 from its own E/M/H."""
    rep = build_report(
        collect(notebook_grid(tmp_path / "runs", stored_average=True)),
        rows="head",
        selectors=["best_acc"],
    )
    row = _block(rep, "best_acc_model.pth", combiner="uncertainty").rows[3]
    assert row.label == "sidernn+mlp"
    assert f"{row.cells['A-ACC']:.4f}" == "0.5549"
    assert "A-ACC" in row.mismatched
    assert any("stored average 0.5532 != 0.5549" in n and "1619/1411/1343" in n for n in row.notes)
    md = to_markdown(rep)
    assert "| sidernn+mlp | 0.6962 | 0.5468 | 0.3931 | 0.5549* |" in md
    # the notebook's other A columns are ~1e-4 off too: its splits were not 1619/1411/1343 images
    dense = _block(rep, "best_acc_model.pth", combiner="avg").rows[0]
    assert f"{dense.cells['A-ACC']:.4f}" == "0.5597" and "A-ACC" in dense.mismatched


def test_recomputed_average_is_weighted_by_n():
    r = result(UNC_BEST_ACC["sidernn+mlp"])
    expected = (0.6962 * 1619 + 0.5468 * 1411 + 0.3931 * 1343) / 4373
    assert recomputed_average(r, "acc") == pytest.approx(expected, abs=1e-12)
    r["splits"]["hard"]["acc"] = None  # a split without a recognizer: no average at all
    assert recomputed_average(r, "acc") is None


def test_identical_metrics_from_different_configs_warn(tmp_path):
    rep = build_report(
        collect(notebook_grid(tmp_path / "runs")), rows="head", selectors=["best_acc"]
    )
    assert len(rep.warnings) == 3  # dense, mlp, sidernn: same to 4 decimals under both losses
    for head, w in zip(("dense", "mlp", "sidernn"), rep.warnings):
        assert (
            f"head={head},combiner=avg-0000abcd and head={head},combiner=uncertainty-0000abcd" in w
        )
        assert 'loss.combiner.type: "avg" vs "uncertainty"' in w
    assert not any("sidernn+mlp" in w for w in rep.warnings)


def test_no_warning_for_reruns_of_the_same_config(tmp_path):
    r = result(AVG_BEST_ACC["dense"])
    write_run(tmp_path / "runs", "dense", "avg", test={"best_acc": r})
    write_run(
        tmp_path / "runs",
        "dense",
        "avg",
        test={"best_acc": r},
        name="head=dense,combiner=avg-0000abcd~2",
    )
    rep = build_report(collect(tmp_path / "runs" / "joint"), selectors=["best_acc"])
    assert rep.warnings == []
    assert len(rep.blocks[0].rows) == 2


def test_csv_and_json(tmp_path):
    rep = build_report(
        collect(notebook_grid(tmp_path / "runs")), rows="head", selectors=["best_acc"]
    )
    rows = list(csv.DictReader(io.StringIO(to_csv(rep))))
    assert len(rows) == 8
    first = rows[0]
    assert (
        first["selector"],
        first["combiner"],
        first["head"],
        first["state"],
        first["source"],
    ) == ("best_acc_model.pth", "avg", "dense", "completed", "test")
    assert float(first["E-ACC"]) == 0.7024
    assert float(first["A-ACC"]) == pytest.approx(
        (0.7024 * 1619 + 0.5539 * 1411 + 0.3939 * 1343) / 4373
    )
    data = json.loads(to_json(rep))
    block = data["blocks"][1]
    assert (
        block["group"] == {"combiner": "uncertainty"} and block["protocol"] == "textzoom (batch 50)"
    )
    assert block["recognizer"] == "crnn (crnn.pth)"
    sid = block["rows"][2]
    assert sid["label"] == "sidernn" and "E-ACC" in sid["best"] and "A-ACC" in sid["best"]
    assert len(data["warnings"]) == 3


def _held_out_val(head: str, combiner: str = "avg") -> dict:
    """A run config that validates on its own splits, not on the test splits."""
    cfg = config(head, combiner)
    cfg["data"]["val"] = {"easy": {"type": "textzoom", "root": "val/easy"}}
    return cfg


def test_failed_running_and_validation_only_runs_are_shown(tmp_path):
    runs = tmp_path / "runs"
    r = result(AVG_BEST_ACC["dense"], stored_average=False)
    write_run(runs, "dense", "avg", test={"best_acc": r}, val={"best_acc": r})
    write_run(
        runs,
        "mlp",
        "avg",
        state="failed",
        step=120,
        error="Traceback...\nRuntimeError: CUDA out of memory",
    )
    v = result(AVG_BEST_ACC["sidernn"], stored_average=False)
    write_run(
        runs,
        "sidernn",
        "avg",
        state="running",
        step=500,
        val={"best_acc": v},
        cfg=_held_out_val("sidernn"),
    )
    rep = build_report(collect(runs / "joint"), rows="head", selectors=["best_acc"])
    block = rep.blocks[0]
    assert block.source == "mixed"
    labels = [r.label for r in block.rows]
    assert labels == ["dense", "mlp", "sidernn"]
    failed, running = block.rows[1], block.rows[2]
    assert failed.run.state == "failed" and failed.cells == {}
    assert running.run.state == "running" and running.result.source == "val"
    assert "validation result (no test result cached)" in running.notes
    md = to_markdown(rep)
    assert "| mlp [failed: RuntimeError: CUDA out of memory] | - | - |" in md
    assert "| sidernn [running, step 500/1000] | 0.7116 |" in md
    assert "values: mixed" in md


def test_validation_only_block_says_so(tmp_path):
    r = result(AVG_BEST_ACC["dense"], stored_average=False)
    write_run(
        tmp_path / "runs",
        "dense",
        "avg",
        val={"best_acc": r, "best_psnr": r},
        cfg=_held_out_val("dense"),
    )
    rep = build_report(collect(tmp_path / "runs" / "joint"))
    assert [b.selector for b in rep.blocks] == ["best_acc_model.pth", "best_psnr_model.pth"]
    assert all(b.source == "val" for b in rep.blocks)
    assert "VALIDATION results of the selector (summary.json), not test results" in to_markdown(rep)


def test_validation_on_the_test_splits_is_not_called_validation(tmp_path):
    """Issue 26: with no [data.val] (or the same tables as [data.test]) the trainer validates
    on the test splits; the table says so, and that the checkpoint was chosen on them."""
    r = result(AVG_BEST_ACC["dense"], stored_average=False)
    for head, cfg in (("dense", config("dense", "avg")), ("mlp", _held_out_val("mlp"))):
        if head == "mlp":
            cfg["data"]["val"] = cfg["data"]["test"]  # the same tables, spelled out
        write_run(tmp_path / "runs", head, "avg", val={"best_acc": r}, cfg=cfg)
    rep = build_report(collect(tmp_path / "runs" / "joint"), rows="head", selectors=["best_acc"])
    (block,) = rep.blocks
    assert block.source == "val" and block.val_on_test
    md = to_markdown(rep)
    assert "VALIDATION" not in md
    assert "test-split results recorded at validation" in md
    assert "the selector chose these checkpoints on them" in md
    assert "validation result on the test splits (no test result cached)" in block.rows[0].notes


def test_stale_cache_is_not_used(tmp_path):
    r = result(AVG_BEST_ACC["dense"], stored_average=False)
    d = write_run(tmp_path / "runs", "dense", "avg", test={"best_acc": r})
    (d / "best_acc_model.pth").write_bytes(
        b"retrained weights"
    )  # the cached result is for older ones
    rep = build_report(collect(d), selectors=["best_acc"])
    row = rep.blocks[0].rows[0]
    assert row.result is None
    assert any("stale" in n for n in row.notes)


def test_unknown_axis_and_selector_name_what_exists(tmp_path):
    coll = collect(notebook_grid(tmp_path / "runs"))
    with pytest.raises(TsrxError, match=r"--rows 'heads'.*did you mean 'head'"):
        build_report(coll, rows="heads")
    with pytest.raises(TsrxError, match=r"--selector 'best_ssim'.*best_acc \(best_acc_model.pth\)"):
        build_report(coll, selectors=["best_ssim"])
    with pytest.raises(TsrxError, match="no run directories"):
        collect(tmp_path)


def _app():
    from tsrx.cli import report_cmd

    app = typer.Typer()
    report_cmd.register(app)
    return app


def test_cli_report_markdown_to_file_and_json(tmp_path):
    exp = notebook_grid(tmp_path / "runs")
    out = tmp_path / "table.md"
    res = CliRunner().invoke(
        _app(),
        [
            "report",
            str(exp),
            "--rows",
            "head",
            "--selector",
            "best_acc",
            "--format",
            "md",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith(NOTEBOOK_AVG_BEST_ACC)
    res = CliRunner().invoke(_app(), ["report", str(exp), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [b["selector"] for b in data["blocks"]] == ["best_acc_model.pth"] * 2 + [
        "best_psnr_model.pth"
    ] * 2
    assert [b["source"] for b in data["blocks"]] == ["test", "test", "val", "val"]


def test_report_from_experiment_file_lists_unlaunched_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "joint.toml").write_text(
        'name = "joint"\n[grid]\n"model.head.type" = ["dense", "mlp"]\n'
        '"loss.combiner.type" = ["avg", "uncertainty"]\n'
    )
    from tsrx.config.experiment import load_experiment

    specs = load_experiment(tmp_path / "joint.toml").runs
    spec = next(
        s
        for s in specs
        if s.point["model.head.type"] == "mlp" and s.point["loss.combiner.type"] == "avg"
    )
    r = result(AVG_BEST_ACC["mlp"], stored_average=False)
    write_run(tmp_path / "runs", "mlp", "avg", val={"best_acc": r}, name=spec.name, cfg=spec.config)
    rep = build_report(collect(tmp_path / "joint.toml"), rows="head")
    block = _block(rep, "best_acc_model.pth", combiner="avg")
    assert [(r.label, r.run.state) for r in block.rows] == [
        ("dense", "missing"),
        ("mlp", "completed"),
    ]
    assert "| dense [not launched] | - |" in to_markdown(rep)


def test_cli_modules_do_not_import_torch():
    code = (
        "import sys; import tsrx.cli.report_cmd, tsrx.report.collect, tsrx.report.tables, "
        "tsrx.report.render, tsrx.report.diff, tsrx.engine.result_cache, tsrx.report.evaluate; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tsrx_report_through_the_real_entry_point(tmp_path):
    exp = notebook_grid(tmp_path / "runs")
    cmd = [
        sys.executable,
        "-c",
        "import sys; from tsrx.cli.main import main; main(sys.argv[1:])",
        "report",
        str(exp),
        "--rows",
        "head",
        "--selector",
        "best_acc",
        "--format",
        "md",
    ]
    res, bad = side_by_side(
        partial(subprocess.run, cmd, capture_output=True, text=True),
        partial(
            subprocess.run,
            cmd[:3] + ["report", str(exp), "--rows", "arch"],
            capture_output=True,
            text=True,
        ),
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(NOTEBOOK_AVG_BEST_ACC)
    assert bad.returncode == 2 and "--rows 'arch': not a grid axis" in bad.stderr
