"""A local study and its jobs: SIGTERM (like Ctrl-C) stops the running job and says so; after a
`kill -9` of the submitter alone, a resubmit adopts the orphaned job and goes on when it ends;
a run waiting its turn is "queued" while its submitter lives (issue 27, point 6; issue 26).
The local launcher with the stand-in trainer, never a real Slurm."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from slurm_fixture import TSRX, tsrx  # noqa: F401
from study_fixture import study_log, study_standin, write_study  # noqa: F401

from tsrx.process import is_same


def _start(path: Path, cwd: Path, step_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [*TSRX, "submit", str(path)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "STUDY_STEP_S": str(step_s)},
    )


def _wait_running(run_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """The job record once the stand-in has written status running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            status = json.loads((run_dir / "status.json").read_text())
            jobs = json.loads((run_dir / "meta.json").read_text()).get("jobs") or []
        except (OSError, ValueError):
            status, jobs = {}, []
        if status.get("state") == "running" and jobs:
            return jobs[-1]
        time.sleep(0.2)
    raise AssertionError(f"{run_dir} never ran")


def _status(run: Path, cwd: Path) -> dict:
    res = tsrx("status", str(run), "--json", cwd=cwd)
    return json.loads(res.stdout)[0]


@pytest.mark.slow
def test_sigterm_stops_the_running_job_and_a_waiting_run_is_queued(workdir, study_standin):
    path = write_study(workdir, study_standin)
    proc = _start(path, workdir, step_s=60)
    try:
        job = _wait_running(workdir / "runs" / "sr" / "main", proc)
        # rec and joint wait their turn: queued while this submitter lives
        rec = next((workdir / "runs" / "rec").glob("head=dense*"))
        row = _status(rec, workdir)
        assert row["state"] == "queued" and f"pid {proc.pid}" in row["error"]
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted: the job this submit was running is stopped" in " ".join(out.split())
    deadline = time.monotonic() + 60
    while is_same(job.get("process")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not is_same(job.get("process")), "the job outlived its submitter"
    assert _status(rec, workdir)["state"] == "not submitted"  # its submitter is gone
    assert "ended before starting it" in _status(rec, workdir)["error"]


@pytest.mark.slow
def test_a_resubmit_adopts_the_job_a_killed_submitter_left(workdir, study_standin):
    path = write_study(workdir, study_standin)
    first = _start(path, workdir, step_s=6)
    try:
        job = _wait_running(workdir / "runs" / "sr" / "main", first)
        first.send_signal(signal.SIGKILL)  # the submitter alone: its job goes on
        first.wait(timeout=30)
        assert is_same(job.get("process"))
        res = tsrx("submit", str(path), cwd=workdir, env={"STUDY_STEP_S": "0.3"}, timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    out = " ".join(res.stdout.split())
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"sr/main: running as job {job['job_id']}, started by an earlier `tsrx submit`" in out
    assert "tsrx cancel" in out
    ran = study_log(workdir)
    stages = sorted(r["run"].split("/")[0] for r in ran)
    assert stages == ["joint"] * 4 + ["rec"] * 2 + ["sr"]  # each run once, the adopted one too
    # rec needs nothing and may run beside the adopted sr job; joint needs sr and waited for it
    sr_end = next(r["end"] for r in ran if r["run"].startswith("sr/"))
    assert sr_end <= min(r["start"] for r in ran if r["run"].startswith("joint/"))
