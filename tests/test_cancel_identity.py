"""`tsrx cancel` signals only what is provably the run's job (issue 14, point 3)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tsrx.config.experiment import RunSpec
from tsrx.launch import control
from tsrx.launch.rundir import prepare_run_dir, record_job
from tsrx.process import identity, is_same
from tsrx.runfiles import update_meta


def local_run(root, name, pid, **extra):
    spec = RunSpec("exp", name, {}, {"name": "exp", "train": {"steps": 10}})
    d = prepare_run_dir(spec, root / "runs", command=["tsrx"])
    record_job(d, str(pid), "local", event="submit", **extra)
    return d


def sleeper():
    """An unrelated process that records SIGINT instead of dying of it."""
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *a: (print('GOT SIGINT', flush=True), sys.exit(7)))\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_completed_run_is_not_signalled(workdir):
    proc = sleeper()  # the recorded PID is alive: before the fix, cancel interrupted it
    try:
        d = local_run(workdir, "done", proc.pid)
        (d / "status.json").write_text(
            json.dumps({"state": "completed", "step": 10, "total_steps": 10})
        )
        (out,) = control.cancel([d])
        assert out[2] == "already completed: nothing to cancel"
        time.sleep(0.3)
        assert proc.poll() is None, "cancel signalled the process of a completed run"
        assert "cancelled" not in json.loads((d / "meta.json").read_text())
    finally:
        proc.kill()
        proc.wait()


def test_a_reused_pid_is_not_signalled(workdir):
    proc = sleeper()
    try:
        d = local_run(workdir, "r", proc.pid)
        # what record_job stored for the job's process, as if that process had ended and the
        # kernel had given its PID to this unrelated one: same PID, another start time
        meta = json.loads((d / "meta.json").read_text())
        meta["jobs"][-1]["process"]["start_ticks"] -= 1000
        update_meta(d, jobs=meta["jobs"])
        (out,) = control.cancel([d])
        assert out[2] == "not running"
        time.sleep(0.3)
        assert proc.poll() is None, "cancel signalled a process that only shares the PID"
    finally:
        proc.kill()
        proc.wait()


def test_the_recorded_process_is_signalled(workdir):
    proc = sleeper()
    try:
        d = local_run(workdir, "r", proc.pid)
        assert json.loads((d / "meta.json").read_text())["jobs"][-1]["process"]["pid"] == proc.pid
        (out,) = control.cancel([d])
        assert out[2] == "interrupted"
        assert proc.wait(timeout=10) == 7 and "GOT SIGINT" in proc.stdout.read()
        assert "cancelled" in json.loads((d / "meta.json").read_text())
    finally:
        proc.kill()
        proc.wait()


def test_process_identity():
    me = identity()
    assert is_same(me) is True
    assert is_same({**me, "start_ticks": me["start_ticks"] + 1}) is False
    assert is_same({**me, "host": "another-host"}) is None
    assert is_same({**me, "pid": 2**22 + 12345}) is False


def test_old_records_accept_only_a_tsrx_or_submitit_process(workdir):
    proc = sleeper()
    try:
        d = local_run(workdir, "old", proc.pid, process=None)
        meta = json.loads((d / "meta.json").read_text())
        meta["jobs"][-1].pop("process")
        update_meta(d, jobs=meta["jobs"])
        (out,) = control.cancel([d])
        assert out[2].startswith("not running (pid") and "another program" in out[2]
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_an_edited_record_signals_neither_process(workdir):
    """meta.json edited so that the job id names process A and the verified identity names B
    (issue 27, point 8): cancel verified B and then signalled A. Now neither is signalled."""
    a, b = sleeper(), sleeper()
    try:
        d = local_run(workdir, "r", a.pid)
        meta = json.loads((d / "meta.json").read_text())
        meta["jobs"][-1]["process"] = identity(b.pid)
        update_meta(d, jobs=meta["jobs"])
        (out,) = control.cancel([d])
        assert out[2].startswith("not signalled: meta.json names job")
        assert f"pid {b.pid}" in out[2]
        time.sleep(0.3)
        assert a.poll() is None and b.poll() is None, "cancel signalled an unverified process"
        assert "cancelled" not in json.loads((d / "meta.json").read_text())
    finally:
        for p in (a, b):
            p.kill()
            p.wait()
