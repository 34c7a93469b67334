"""``tsrx cancel`` and ``tsrx logs``: acting on a run through the job ids in its meta.json."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tsrx.errors import TsrxError
from tsrx.launch.rundir import read_meta, update_meta, utc_now


def last_job(run_dir: Path) -> dict | None:
    jobs = [j for j in read_meta(run_dir).get("jobs", []) if j.get("event") == "submit"]
    return jobs[-1] if jobs else None


def cancel(run_dirs: list[Path]) -> list[tuple[Path, str, str]]:
    """Cancel each run's latest job; returns (run_dir, job_id, outcome) per run with a job."""
    out = []
    slurm_ids = []
    for d in run_dirs:
        job = last_job(d)
        if job is None:
            continue
        jid = str(job["job_id"])
        if job.get("launcher") == "slurm":
            slurm_ids.append(jid)
            out.append((d, jid, "scancel"))
        else:
            try:
                # submitit's LocalJob.cancel: SIGINT to the controller, which stops its ranks
                os.kill(int(jid), signal.SIGINT)
                out.append((d, jid, "interrupted"))
            except (ProcessLookupError, ValueError):
                out.append((d, jid, "not running"))
    if slurm_ids:
        try:
            res = subprocess.run(["scancel", *slurm_ids], capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise TsrxError("scancel not found on PATH: cancel Slurm jobs from the cluster's "
                            "login node") from None
        if res.returncode != 0:
            raise TsrxError(f"scancel {' '.join(slurm_ids)} failed: {res.stderr.strip()}")
    for d, _, outcome in out:
        if outcome != "not running":
            update_meta(d, cancelled=utc_now())
    return out


def log_path(run_dir: Path, rank: int = 0) -> Path:
    """``logs/rank<R>.log`` (a link the job makes to submitit's log), else submitit's file."""
    link = Path(run_dir) / "logs" / f"rank{rank}.log"
    if link.exists():
        return link
    job = last_job(run_dir)
    folder = read_meta(run_dir).get("submitit_folder")
    if job and folder:
        jid = str(job["job_id"])
        cand = Path(folder) / jid / f"{jid}_{rank}_log.out"
        if cand.exists():
            return cand
    raise TsrxError(f"{run_dir}: no log for rank {rank} yet (looked at {link}); "
                    "the job may still be pending")
