"""One writer per run directory.

A run directory has one writer: the job that trains it. The writer holds an exclusive
``flock`` on ``<run>/.writer.lock`` for as long as it trains; the kernel (or the NFSv4 /
Lustre lock manager) drops the lock when the process dies, even by ``kill -9``, so a dead
writer never leaves the directory locked. The lock file also records who holds it (job id,
host, PID and start time), which is what a refused second writer is told.

Filesystems without working ``flock`` (an NFSv3 mount without lockd, some FUSE filesystems)
fall back to a lease: the holder rewrites the lock file every ``LEASE_RENEW_S``; a later
writer takes over when the holder's process is provably gone (same host) or the lease has not
been renewed for ``LEASE_EXPIRY_S`` (another host, e.g. a lost node).

Submissions are serialised per experiment by ``.submit.lock`` (``tsrx submit S & tsrx submit S``:
the second is refused at once), and a run whose last job is still queued or running is not
submitted again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tsrx import process
from tsrx.errors import TsrxError
from tsrx.runfiles import WRITER_LOCK

LOCK = WRITER_LOCK
SUBMIT_LOCK = ".submit.lock"
LEASE_RENEW_S = 30.0
LEASE_EXPIRY_S = 300.0


class RunDirBusy(TsrxError):
    """Another job writes this run directory."""


def job_label() -> dict[str, str]:
    """This process's job as the scheduler names it (Slurm array task, submitit local job, pid)."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return {
            "job_id": f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}",
            "launcher": "slurm",
        }
    if env.get("SLURM_JOB_ID"):
        return {"job_id": env["SLURM_JOB_ID"], "launcher": "slurm"}
    if env.get("SUBMITIT_LOCAL_JOB_ID"):
        return {"job_id": env["SUBMITIT_LOCAL_JOB_ID"], "launcher": "local"}
    return {"job_id": str(os.getpid()), "launcher": "local (tsrx train)"}


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process (it left no record)"
    ident = holder.get("process") or {}
    since = f", since {holder['since']}" if holder.get("since") else ""
    return (
        f"job {holder.get('job_id', '?')} ({holder.get('launcher', '?')}) on host "
        f"{ident.get('host', '?')}, pid {ident.get('pid', '?')}{since}"
    )


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _flock_unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def holder_if_busy(run_dir: Path) -> dict[str, Any] | None:
    """The record of the writer holding ``run_dir`` now, or None when it is free.

    Probes with a shared lock, so probes of several ranks of one job never look busy to each
    other; a writer takes the exclusive lock only after every rank has joined the job.
    """
    path = Path(run_dir) / LOCK
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(path) or {}
    except OSError as exc:
        if not _flock_unsupported(exc):
            raise
        return _lease_holder(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _lease_holder(path: Path) -> dict[str, Any] | None:
    """Lease mode: the holder when its lease is still good."""
    holder = _read_holder(path)
    if not holder or holder.get("released"):
        return None
    same = process.is_same(holder.get("process"))
    if same is not None:
        return holder if same else None
    age = time.time() - float(holder.get("renewed", 0))
    return holder if age < LEASE_EXPIRY_S else None


def refuse_if_busy(run_dir: Path, doing: str = "write it") -> None:
    holder = holder_if_busy(run_dir)
    if holder is not None:
        raise RunDirBusy(
            f"run directory {run_dir} is being written by {describe(holder)}; one job writes a run "
            f"at a time, so this one does not {doing}. Wait for it, or stop it with "
            f"`tsrx cancel {run_dir}`"
        )


class WriterLock:
    """Held by the writing job (rank 0) while it trains; see the module docstring."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None
        self.lease = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.record = {**job_label(), "process": process.identity(), "since": _now_text()}

    def acquire(self) -> WriterLock:
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            from tsrx.runfiles import is_read_only, read_only_error

            if is_read_only(exc):
                raise read_only_error(self.path, exc, "training (a resume too)") from None
            raise
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._close()
            refuse_if_busy(self.path.parent)
            raise RunDirBusy(
                f"run directory {self.path.parent} is locked by another writer"
            ) from None
        except OSError as exc:
            if not _flock_unsupported(exc):
                self._close()
                raise
            self._acquire_lease()
            return self
        self._write_record()
        return self

    def _acquire_lease(self) -> None:
        holder = _lease_holder(self.path)
        if holder is not None and (holder.get("process") or {}) != self.record["process"]:
            self._close()
            refuse_if_busy(self.path.parent)
        self.lease = True
        self._write_record()
        self._thread = threading.Thread(target=self._renew, name="tsrx-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_RENEW_S):
            self._write_record()

    def _write_record(self) -> None:
        fd = self.fd
        if fd is None:  # released while the lease thread renewed (a join that timed out)
            return
        data = json.dumps({**self.record, "renewed": time.time(), "lease": self.lease}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self) -> None:
        if self.fd is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if self.lease:
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, json.dumps({**self.record, "released": True}).encode(), 0)
            else:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError:
            pass
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _now_text() -> str:
    from tsrx.runfiles import utc_now

    return utc_now()


@contextmanager
def submitting(folder: Path, experiment: str) -> Iterator[None]:
    """Serialise ``tsrx submit`` of one experiment (lock file in ``folder``, the experiment's
    submitit folder): a second concurrent submit is refused."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SUBMIT_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_holder(path) or {}
            ident = other.get("process") or {}
            raise RunDirBusy(
                f"another tsrx submit of experiment {experiment} is running (pid "
                f"{ident.get('pid', '?')} on {ident.get('host', '?')}, since {other.get('since', '?')}); "
                "submissions of one experiment go one at a time. Run this one when it is done"
            ) from None
        except OSError as exc:
            if not _flock_unsupported(exc):
                raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"process": process.identity(), "since": _now_text()}).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock
