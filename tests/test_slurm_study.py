"""A three-stage study on the real single-node Slurm (slurm/start.sh): one ``tsrx submit``
queues every job with ``afterok`` dependencies and returns; the jobs run in order; a
failed upstream leaves its dependants never started (Slurm cancels them) and ``tsrx
status FILE`` says why; submitting again does only what is left."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from slurm_fixture import slurm_cluster, tsrx, wait_for  # noqa: F401
from study_fixture import study_log, study_standin, write_study  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LAUNCHER = "gpus_per_node = 0\ntasks_per_node = 1\ncpus_per_task = 1\ntimeout_min = 5\n"


def _study(path, cwd):
    res = tsrx("status", str(path), "--json", cwd=cwd)
    assert res.returncode == 0, res.stderr
    return {f"{r['stage']}/{r['run'].split('-')[0]}": r for r in json.loads(res.stdout)}


def _dependency(job_id: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return next((w for w in out.split() if w.startswith("Dependency=")), "")


def _job_ids(run_dir) -> list[str]:
    meta = json.loads((run_dir / "meta.json").read_text())
    return [j["job_id"] for j in meta["jobs"] if j.get("event") == "submit"]


def test_one_submit_queues_the_whole_study_in_order_and_resubmit_does_what_is_left(
    slurm_cluster, workdir, study_standin, monkeypatch
):
    monkeypatch.setenv(
        "STUDY_STEP_S", "25"
    )  # long enough to see a run wait, even on a busy machine
    monkeypatch.setenv("STUDY_FAIL", "rec")
    path = write_study(workdir, study_standin, launcher="slurm", launcher_extra=LAUNCHER)
    started = time.monotonic()
    res = tsrx("submit", str(path), cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert time.monotonic() - started < 60  # queued, not waited for
    assert "7 job(s) submitted" in res.stdout
    runs = workdir / "runs"
    joint = sorted(d for d in (runs / "joint").iterdir() if d.name != "submitit")
    rec = sorted(d for d in (runs / "rec").iterdir() if d.name != "submitit")
    assert len(joint) == 4 and len(rec) == 2
    sr_job = _job_ids(runs / "sr" / "main")[0]
    for d in joint:  # each joint job waits on stage 1 and on the stage-2 run of its head
        head = d.name.split(",")[0]
        rec_job = _job_ids(next(r for r in rec if r.name.startswith(head)))[0]
        dep = _dependency(_job_ids(d)[0])
        assert f"afterok:{sr_job}" in dep and f"afterok:{rec_job}" in dep, dep
    rows = _study(path, workdir)
    assert rows["joint/head=dense,combiner=avg"]["study_state"] == "waiting"
    assert "waits on sr/main" in rows["joint/head=dense,combiner=avg"]["why"]

    # stage 2 fails: Slurm cancels the joint jobs before they start
    def settled():
        rows = _study(path, workdir)
        return (
            rows
            if all(r["study_state"] in ("done", "failed", "blocked") for r in rows.values())
            else None
        )

    rows = wait_for(settled, 240, "the study to settle after the failure", interval_s=3)
    assert rows["sr/main"]["study_state"] == "done"
    assert {rows[k]["study_state"] for k in rows if k.startswith("rec/")} == {"failed"}
    blocked = [r for k, r in rows.items() if k.startswith("joint/")]
    assert all(
        r["study_state"] == "blocked" and "never started: upstream rec/head=" in r["why"]
        for r in blocked
    ), blocked
    assert not [r for r in study_log(workdir) if r["run"].startswith("joint/")]
    first = study_log(workdir)
    assert max(r["end"] for r in first if r["run"] == "sr/main") > 0

    # fixed: resubmitting redoes neither stage 1 nor anything completed
    monkeypatch.delenv("STUDY_FAIL")
    monkeypatch.setenv("STUDY_STEP_S", "3")
    res = tsrx("submit", str(path), cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sr/main: done already, not redone" in res.stdout and "6 job(s) submitted" in res.stdout
    rows = wait_for(
        lambda: (
            (r := _study(path, workdir))
            and all(x["study_state"] == "done" for x in r.values())
            and r
        ),
        240,
        "the whole study done",
        interval_s=3,
    )
    assert len(rows) == 7
    again = study_log(workdir)[len(first) :]
    assert sorted(r["run"].split("/")[0] for r in again) == ["joint"] * 4 + ["rec"] * 2
    ends = {r["run"]: r["end"] for r in again}
    for r in again:
        if r["run"].startswith("joint/"):
            head = r["run"].split("/")[1].split(",")[0]
            rec_end = next(e for k, e in ends.items() if k.startswith(f"rec/{head}-"))
            assert r["start"] >= rec_end  # in order: after the run it loads
    assert len(_job_ids(runs / "sr" / "main")) == 1
