"""``tsrx cancel`` and ``tsrx logs``: acting on a run through the job ids in its meta.json."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError
from tsrx.process import cmdline, is_same
from tsrx.runfiles import rank_log, read_meta, read_status, update_meta, utc_now


def last_job(run_dir: Path) -> dict[str, Any] | None:
    jobs = [j for j in read_meta(run_dir).get("jobs", []) if j.get("event") == "submit"]
    return jobs[-1] if jobs else None


def _local_job_process(job: dict[str, Any]) -> tuple[int | None, str]:
    """The PID to signal when it is provably the job's process, else (None, why not)."""
    jid = str(job["job_id"])
    if not jid.isdigit():
        return None, "not running"
    record = job.get("process")
    if isinstance(record, dict):
        if str(record.get("pid")) != jid:
            # meta.json was edited or mixed up: the identity checked below would vouch for
            # another process than the one the job id names, so neither is signalled
            return None, (
                f"not signalled: meta.json names job {jid} but its process record names pid "
                f"{record.get('pid')!r}; stop the job by hand (kill -INT PID) once you know "
                "which process it is"
            )
        same = is_same(record)
        if same is None:
            return None, f"runs on host {record.get('host')}: cancel it there"
        return (int(record["pid"]), "") if same else (None, "not running")
    # recorded before tsrx kept process identities: accept only a submitit/tsrx process
    args = " ".join(cmdline(int(jid)))
    if not args:
        return None, "not running"
    if "submitit" not in args and "tsrx" not in args:
        return None, f"not running (pid {jid} is now another program: {args[:80]})"
    return int(jid), ""


def cancel(run_dirs: list[Path]) -> list[tuple[Path, str, str]]:
    """Cancel each run's latest job; returns (run_dir, job_id, outcome) per run with a job.

    Only what is provably the run's job is signalled: a completed run is left alone, and a
    local job's PID is signalled only while it still names the process that was recorded
    (same start time), never a later process that reused the number.
    """
    out = []
    slurm_ids = []
    for d in run_dirs:
        job = last_job(d)
        if job is None:
            continue
        jid = str(job["job_id"])
        if read_status(d).get("state") == "completed":
            out.append((d, jid, "already completed: nothing to cancel"))
        elif job.get("launcher") == "slurm":
            slurm_ids.append(jid)
            out.append((d, jid, "scancel"))
        else:
            pid, why = _local_job_process(job)
            if pid is None:
                out.append((d, jid, why))
                continue
            try:
                # submitit's LocalJob.cancel: SIGINT to the controller, which stops its ranks
                os.kill(pid, signal.SIGINT)
                out.append((d, jid, "interrupted"))
            except ProcessLookupError:
                out.append((d, jid, "not running"))
    if slurm_ids:
        try:
            res = subprocess.run(
                ["scancel", *slurm_ids], capture_output=True, text=True, timeout=60
            )
        except FileNotFoundError:
            raise TsrxError(
                "scancel not found on PATH: cancel Slurm jobs from the cluster's login node"
            ) from None
        if res.returncode != 0:
            raise TsrxError(f"scancel {' '.join(slurm_ids)} failed: {res.stderr.strip()}")
    for d, _, outcome in out:
        if outcome in ("scancel", "interrupted"):
            update_meta(d, cancelled=utc_now())
    return out


def log_path(run_dir: Path, rank: int = 0) -> Path:
    """``logs/rank<R>.log`` (a link the job makes to submitit's log), else submitit's file."""
    link = rank_log(run_dir, rank)
    if link.exists():
        return link
    job = last_job(run_dir)
    folder = read_meta(run_dir).get("submitit_folder")
    if job and folder:
        jid = str(job["job_id"])
        cand = Path(folder) / jid / f"{jid}_{rank}_log.out"
        if cand.exists():
            return cand
    raise TsrxError(
        f"{run_dir}: no log for rank {rank} yet (looked at {link}); the job may still be pending"
    )
