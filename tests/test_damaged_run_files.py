"""Damaged run files give clear errors (file, line, what was expected), never tracebacks, in
every command that reads them: status, report, diff and a resume (issue 27, point 5)."""

from __future__ import annotations

import json
import logging
import re

import pytest
import typer
from test_report_fixtures import AVG_BEST_ACC, result, write_run
from typer.testing import CliRunner

from tsrx.engine.runfiles import truncate_metrics
from tsrx.runfiles import DamagedRunFile, read_config, read_metrics, read_summary

GOOD = '{"kind": "train", "step": 1, "samples_per_s": 3.0, "loss": 1.0}\n'


def damaged(tmp_path, case: str):
    r = result(AVG_BEST_ACC["dense"], stored_average=False)
    d = write_run(tmp_path / "runs", "dense", "avg", val={"best_acc": r}, name=case)
    (d / "metrics.jsonl").write_text(GOOD + '{"kind": "train", "step": 2, "loss": 0.5}\n')
    if case == "int_line":
        (d / "metrics.jsonl").write_text(GOOD + "42\n" + '{"kind": "train", "step": 2}\n')
    elif case == "binary_metrics":
        (d / "metrics.jsonl").write_bytes(bytes(range(256)) * 4)
    elif case == "bad_summary":
        (d / "summary.json").write_text('{"best": 5, "final": "x"}')
    elif case == "binary_config":
        (d / "config.toml").write_bytes(b"\x00\xff\xfe" + bytes(range(256)))
    return d


EXPECTED = {
    "int_line": r"metrics.jsonl:2: a JSON int \(42\); expected an object per line",
    "binary_metrics": r"metrics.jsonl: the run's metrics is not text \(binary data at byte 128",
    "bad_summary": r"summary.json: 'best' should be an object",
    "binary_config": r"config.toml: not text \(binary data at byte 1 of 259\); expected the "
    r"run's resolved config",
}
CASES = list(EXPECTED)


def test_the_readers_name_file_line_and_what_was_expected(tmp_path):
    d = damaged(tmp_path, "int_line")
    records, problems = read_metrics(d)
    assert [r["step"] for r in records] == [1, 2]
    assert len(problems) == 1 and f"{d}/metrics.jsonl:2:" in problems[0]
    with pytest.raises(DamagedRunFile, match=EXPECTED["binary_metrics"]):
        read_metrics(damaged(tmp_path, "binary_metrics"))
    with pytest.raises(DamagedRunFile, match=EXPECTED["bad_summary"]):
        read_summary(damaged(tmp_path, "bad_summary"))
    with pytest.raises(DamagedRunFile, match=EXPECTED["binary_config"]):
        read_config(damaged(tmp_path, "binary_config"))


def test_a_torn_last_line_is_no_problem(tmp_path):
    d = damaged(tmp_path, "torn")
    with open(d / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "train", "step": 3, "label": "\xc3')  # cut inside a character
    records, problems = read_metrics(d)
    assert [r["step"] for r in records] == [1, 2] and problems == []


def _app():
    from tsrx.cli import report_cmd, submit_cmd

    app = typer.Typer()
    report_cmd.register(app)
    submit_cmd.register(app)
    return app


@pytest.mark.parametrize("case", CASES)
def test_status_and_report_say_what_is_damaged(tmp_path, case):
    d = damaged(tmp_path, case)
    runner = CliRunner()
    res = runner.invoke(_app(), ["status", str(d), "--json"])
    assert res.exit_code == 0 and res.exception is None, res.output
    (row,) = json.loads(res.stdout)
    if case in ("int_line", "binary_metrics"):  # what status reads; the state is still known
        assert row["state"] == "completed"
        assert row["error"] and re.search(EXPECTED[case], row["error"])
    res = runner.invoke(_app(), ["report", str(d), "-f", "md"])
    assert res.exit_code == 0 and res.exception is None, res.output
    assert re.search(EXPECTED[case], " ".join(res.output.split()))


def test_diff_of_a_binary_config_is_an_error_not_a_traceback(tmp_path):
    from tsrx.cli import report_cmd

    a, b = damaged(tmp_path, "binary_config"), damaged(tmp_path, "int_line")
    app = typer.Typer()
    report_cmd.register(app)
    res = CliRunner().invoke(app, ["diff", str(a), str(b)])
    assert res.exit_code != 0
    assert "config.toml" in str(res.exception) and "Traceback" not in res.output


def test_resume_drops_a_damaged_line_with_a_warning(tmp_path, caplog):
    d = damaged(tmp_path, "int_line")
    with caplog.at_level(logging.WARNING, logger="tsrx.train"):
        truncate_metrics(d / "metrics.jsonl", 1)
    assert (d / "metrics.jsonl").read_text() == GOOD
    assert "metrics.jsonl:2: a JSON int (42)" in caplog.text and "dropped on resume" in caplog.text


def test_resume_of_binary_metrics_or_config_stops_with_what_to_do(tmp_path):
    from tsrx.engine.run import load_run_config

    with pytest.raises(DamagedRunFile, match=EXPECTED["binary_metrics"] + r".*Move it aside"):
        truncate_metrics(damaged(tmp_path, "binary_metrics") / "metrics.jsonl", 1)
    with pytest.raises(DamagedRunFile, match=EXPECTED["binary_config"]):
        load_run_config(damaged(tmp_path, "binary_config"))


def test_curves_of_a_binary_metrics_file_say_why_there_is_nothing_to_plot(tmp_path):
    from tsrx.errors import TsrxError
    from tsrx.report.collect import read_run
    from tsrx.viz.curves import plot_curves

    run = read_run(damaged(tmp_path, "binary_metrics"))
    with pytest.raises(TsrxError, match=EXPECTED["binary_metrics"]):
        plot_curves([run], tmp_path / "curves.png")
