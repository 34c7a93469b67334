"""One writer per run directory (issue 14, point 2), locally: a second `tsrx train` or
`tsrx submit` of a run that trains is refused at once naming the holder; `kill -9` of the
writer does not leave the directory locked; the next writer removes the dead one's temp files."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from test_engine_helpers import tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx import runfiles, writer
from tsrx.writer import RunDirBusy, WriterLock, holder_if_busy


def start_train(exp, runs, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "tsrx", "train", str(exp), "--runs-dir", str(runs)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _kill_local_jobs(run_dir):
    """A failed test must not leave its local job training (1,000,000 steps) for the rest of
    the suite: kill the recorded submitit controllers and their ranks."""
    from tsrx.errors import TsrxError
    from tsrx.process import is_same
    from tsrx.runfiles import read_meta

    try:
        jobs = read_meta(run_dir).get("jobs") or []
    except TsrxError:
        return
    for record in [j["process"] for j in jobs if j.get("process")]:
        if is_same(record):  # still that process (start time and command line), not a reused PID
            subprocess.run(["pkill", "-KILL", "-P", str(record["pid"])], check=False)
            try:
                os.kill(record["pid"], signal.SIGKILL)
            except OSError:
                pass


def wait_training(run_dir, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((run_dir / "status.json").read_text()).get("step", 0) > 0:
                return
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    pytest.fail("training did not start")


@pytest.mark.slow
def test_second_writer_refused_and_kill_9_frees_the_directory(tmp_path, tiny_data, tiny_plugin):
    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, extra="")
    exp.write_text(
        exp.read_text()
        .replace("steps = 8", "steps = 1000000")
        .replace("val_every = 4", "val_every = 1000000")
    )
    runs = tmp_path / "runs"
    run_dir = runs / "tiny" / "main"
    first = start_train(exp, runs, tmp_path)
    try:
        wait_training(run_dir, first)
        holder = holder_if_busy(run_dir)
        assert holder["process"]["pid"] == first.pid and holder["job_id"] == str(first.pid)
        # a second foreground train of the same run: refused at once, naming the holder
        second = subprocess.run(
            [sys.executable, "-m", "tsrx", "train", str(exp), "--runs-dir", str(runs)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2, second.stderr
        assert (
            f"is being written by job {first.pid}" in second.stderr
            and "tsrx cancel" in second.stderr
        )
        # and a submit of it
        sub = subprocess.run(
            [
                sys.executable,
                "-m",
                "tsrx",
                "submit",
                str(exp),
                "--launcher",
                "local",
                "--set",
                f"launcher.runs_dir={runs}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert sub.returncode == 2 and f"job {first.pid}" in sub.stderr, sub.stdout + sub.stderr
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert sum(1 for x in lines if x["kind"] == "run") == 1  # only the first ever trained
        # kill -9: the lock goes with the process; temp files of the dead writer stay behind...
        first.send_signal(signal.SIGKILL)
        first.wait()
        host = runfiles._host()
        for name in (
            f".last.pth.tsrx-{host}-{first.pid}.tmp",
            f".status.json.tsrx-{host}-{first.pid}.tmp",
        ):
            (run_dir / name).write_bytes(b"half a file")
        (run_dir / ".my_notes.tmp").write_text("the user's")  # issue 27, point 3: not tsrx's
        assert holder_if_busy(run_dir) is None
        # ... until the next writer of the directory starts
        third = start_train(exp, runs, tmp_path)
        try:
            deadline = time.monotonic() + 120
            while list(run_dir.glob(".*.tsrx-*.tmp")) and time.monotonic() < deadline:
                assert third.poll() is None, third.stderr.read()
                time.sleep(0.2)
            assert not list(run_dir.glob(".*.tsrx-*.tmp"))
            assert (run_dir / ".my_notes.tmp").read_text() == "the user's"
            assert holder_if_busy(run_dir)["process"]["pid"] == third.pid
        finally:
            third.send_signal(signal.SIGINT)  # Ctrl-C: stop at a step boundary and save
            assert third.wait(timeout=120) == 130, third.stderr.read()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert holder_if_busy(run_dir) is None


def test_writer_lock_in_process(tmp_path):
    with WriterLock(tmp_path):
        with pytest.raises(RunDirBusy, match=f"pid {os.getpid()}"):
            WriterLock(tmp_path).acquire()
        assert holder_if_busy(tmp_path)["process"]["pid"] == os.getpid()
    assert holder_if_busy(tmp_path) is None
    with WriterLock(tmp_path):  # free again
        pass


def test_lease_fallback_where_flock_does_not_work(tmp_path, monkeypatch):
    """NFSv3 without lockd: flock fails with ENOLCK. The lease names a live holder; a holder
    whose process is gone, or whose lease expired on another host, is taken over."""

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.setattr(writer, "LEASE_RENEW_S", 0.05)
    lock = WriterLock(tmp_path).acquire()
    try:
        assert lock.lease
        other = WriterLock(tmp_path)
        other.record = {**other.record, "process": {**other.record["process"], "pid": 1}}
        with pytest.raises(RunDirBusy, match="is being written by"):
            other.acquire()
        time.sleep(0.2)  # renewed meanwhile
        assert json.loads((tmp_path / writer.LOCK).read_text())["renewed"] > time.time() - 1
    finally:
        lock.release()
    assert holder_if_busy(tmp_path) is None  # released
    # a holder on another host that stopped renewing (a lost node) expires
    stale = {
        "job_id": "77",
        "launcher": "slurm",
        "renewed": time.time() - writer.LEASE_EXPIRY_S - 1,
        "process": {"pid": 4242, "host": "lost-node", "start_ticks": 1},
    }
    (tmp_path / writer.LOCK).write_text(json.dumps(stale))
    assert holder_if_busy(tmp_path) is None
    stale["renewed"] = time.time()
    (tmp_path / writer.LOCK).write_text(json.dumps(stale))
    assert holder_if_busy(tmp_path)["job_id"] == "77"
    # a holder on this host whose process is gone is free at once
    stale["process"] = {"pid": 2**22 + 7, "host": os.uname().nodename, "start_ticks": 1}
    (tmp_path / writer.LOCK).write_text(json.dumps(stale))
    assert holder_if_busy(tmp_path) is None


@pytest.mark.slow
def test_concurrent_local_submits_train_the_run_once(tmp_path, tiny_data, tiny_plugin):
    """`tsrx submit S & tsrx submit S` with the local launcher: one trains, one is refused,
    and `tsrx cancel` stops the one that trains."""
    exp = write_experiment(tmp_path, tiny_data, tiny_plugin)
    exp.write_text(
        exp.read_text()
        .replace("steps = 8", "steps = 1000000")
        .replace("val_every = 4", "val_every = 1000000")
    )
    runs = tmp_path / "runs"
    args = [
        sys.executable,
        "-m",
        "tsrx",
        "submit",
        str(exp),
        "--launcher",
        "local",
        "--set",
        f"launcher.runs_dir={runs}",
        "--set",
        "launcher.gpus_per_node=0",
        "--set",
        "launcher.tasks_per_node=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # started as `tsrx submit ... &` from a script is: SIGINT ignored (a shell without job
    # control does that), which the job must not inherit, or `tsrx cancel` cannot stop it
    procs = [
        subprocess.Popen(
            args,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        for _ in range(2)
    ]
    run_dir = runs / "tiny" / "main"
    try:
        deadline = time.monotonic() + 120
        while not any(p.poll() is not None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = next((p for p in procs if p.poll() is not None), None)
        assert refused is not None, "neither submit was refused"
        err = refused.stderr.read()
        assert refused.returncode == 2, err
        assert (
            "another tsrx submit of experiment tiny" in err
            or "is being written by job" in err
            or "already has job" in err
        ), err
        trainer = next(p for p in procs if p is not refused)
        wait_training(run_dir, trainer)
        submits = [
            j
            for j in json.loads((run_dir / "meta.json").read_text())["jobs"]
            if j["event"] == "submit"
        ]
        assert len(submits) == 1
        out = subprocess.run(
            [sys.executable, "-m", "tsrx", "cancel", str(run_dir)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and "interrupted" in out.stdout, out.stdout + out.stderr
        trainer.wait(timeout=180)
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert sum(1 for x in lines if x["kind"] == "run") == 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        _kill_local_jobs(run_dir)
