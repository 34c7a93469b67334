"""`tsrx status` and `tsrx report` read a run's state through one reader: a run whose local job
was killed with SIGKILL mid-training is failed in both, with the same reason (issue 27, point 7)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import typer
from test_report_fixtures import AVG_BEST_ACC, result, write_run
from typer.testing import CliRunner

from tsrx.launch.rundir import record_job
from tsrx.launch.status import run_status
from tsrx.report.collect import collect
from tsrx.report.render import to_markdown
from tsrx.report.tables import build_report


def _killed_run(tmp_path):
    """A run at step 15/400 whose trainer (a local job) died by SIGKILL: status.json still
    says running, because a killed process writes nothing."""
    v = result(AVG_BEST_ACC["dense"], stored_average=False)
    d = write_run(
        tmp_path / "runs", "dense", "avg", state="running", step=15, steps=400, val={"best_acc": v}
    )
    job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record_job(d, str(job.pid), "local", event="submit")
    record_job(d, str(job.pid), "local", event="start", host="here")
    job.send_signal(signal.SIGKILL)
    job.wait()
    return d


def test_status_and_report_agree_on_a_killed_run(tmp_path):
    d = _killed_run(tmp_path)
    row = run_status(d)
    assert row.state == "failed" and "ended without recording how" in row.error
    rep = build_report(collect(d), selectors=["best_acc"])
    (r,) = rep.blocks[0].rows
    assert r.run.state == "failed"
    md = to_markdown(rep)
    assert "running" not in md.split("|")[1]
    assert "[failed: its process (pid" in md


def test_the_cli_commands_agree(tmp_path):
    from tsrx.cli import report_cmd, submit_cmd

    d = _killed_run(tmp_path)
    app = typer.Typer()
    report_cmd.register(app)
    submit_cmd.register(app)
    status = CliRunner().invoke(app, ["status", str(d), "--json"])
    assert json.loads(status.stdout)[0]["state"] == "failed"
    report = CliRunner().invoke(app, ["report", str(d), "-f", "json"])
    (block,) = [b for b in json.loads(report.stdout)["blocks"] if "acc" in b["selector"]]
    assert block["rows"][0]["state"] == "failed"
