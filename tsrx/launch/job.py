"""The callable submitit runs on every rank of a job: one run directory, trained to the end.

It holds only paths and names (a tiny pickle) and imports the training code inside
``__call__``, so submitting never imports torch.

Preemption and time limits. Slurm (``--signal=USR2@signal_delay_s``) and submitit's
local controller send SIGUSR2 to every rank. submitit's own handler would requeue
from inside the signal handler, in the middle of a step and before anything is
saved, and only on rank 0. So ``__call__`` replaces it on every rank with a handler
that only asks the trainer to stop (``tsrx.engine.signals.request_stop``); the
trainer stops all ranks at the same step boundary, saves ``last.pth`` and returns
``{"state": "preempted"}``. Only then does rank 0 call submitit's original handler,
which calls :meth:`TrainJob.checkpoint` (a fresh job for the same directory), dumps
it, runs ``scontrol requeue`` (local: exits with the requeue code) and exits; the
other ranks exit without a result. The requeued job resumes from ``last.pth``.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tsrx.config.schema import TRAINER_ENTRY
from tsrx.runfiles import CONFIG, rank_log

TRAIN_TARGET = TRAINER_ENTRY
STOP_TARGET = "tsrx.engine.signals:request_stop"

# -- submitit internals: the only ones tsrx relies on, kept here. Tested with submitit 1.5.x;
# pyproject.toml bounds the version (submitit>=1.5,<1.6) so a release that moves them is
# picked up deliberately.
SUBMITIT_RUNNER = "submitit.core._submit"  # the module a job's sbatch script runs


def preemption_signal(job_env: Any) -> int:
    """The signal submitit asks Slurm to send before the time limit (USR2 by default)."""
    return int(job_env._usr_sig())


def sbatch_string(command: str, folder: Path, **params: Any) -> str:
    """The sbatch file submitit writes for ``params`` (shown by ``tsrx submit --dry-run``)."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(command=command, folder=folder, **params)


def _resolve(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    return fn


def export_distributed_env(job_env: Any) -> dict[str, str]:
    """torch ``env://`` variables from the submitit environment, without overriding the user's.

    Sets MASTER_ADDR (first host of SLURM_JOB_NODELIST; 127.0.0.1 for the local
    launcher), MASTER_PORT (:func:`tsrx.engine.distributed.port_for_job`), RANK,
    WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE. CUDA_VISIBLE_DEVICES is left as
    Slurm/submitit set it: the engine picks ``cuda:LOCAL_RANK``.
    """
    from tsrx.engine.distributed import first_host, port_for_job

    raw_id = os.environ.get("SLURM_JOB_ID") or job_env.raw_job_id
    local = job_env.cluster == "local"
    nodelist = os.environ.get("SLURM_JOB_NODELIST")
    values = {
        "MASTER_ADDR": "127.0.0.1"
        if local
        else (first_host(nodelist) if nodelist else job_env.hostnames[0]),
        "MASTER_PORT": str(port_for_job(raw_id)),
        "RANK": str(job_env.global_rank),
        "WORLD_SIZE": str(job_env.num_tasks),
        "LOCAL_RANK": str(job_env.local_rank),
        "LOCAL_WORLD_SIZE": str(max(1, job_env.num_tasks // max(1, job_env.num_nodes))),
    }
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if os.environ.get(key):
            values[key] = os.environ[key]
    os.environ.update(values)
    return values


def _link_rank_log(run_dir: Path, job_env: Any) -> None:
    """``logs/rank<R>.log`` -> this attempt's submitit log (stderr goes there too)."""
    target = job_env.paths.stdout
    link = rank_log(run_dir, job_env.global_rank)
    link.parent.mkdir(exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    try:
        os.symlink(os.path.abspath(target), tmp)
        os.replace(tmp, link)
    except OSError:
        pass  # logs stay readable in submitit's folder


class TrainJob:
    """Train the run in ``run_dir`` (its ``config.toml``) on every rank of the job."""

    def __init__(
        self,
        run_dir: str | Path,
        launcher: str = "slurm",
        target: str = TRAIN_TARGET,
        stop_target: str = STOP_TARGET,
    ) -> None:
        self.run_dir = str(Path(run_dir).resolve())
        self.config_path = str(Path(self.run_dir) / CONFIG)
        self.launcher = launcher
        self.target = target
        self.stop_target = stop_target

    def __repr__(self) -> str:
        return f"TrainJob({self.run_dir!r})"

    def __call__(self) -> dict[str, Any]:
        import submitit

        from tsrx.launch.rundir import record_job
        from tsrx.runfiles import utc_now

        job_env = submitit.JobEnvironment()
        run_dir = Path(self.run_dir)
        # a second job on a run that another job trains touches nothing, not even the log link
        from tsrx.writer import refuse_if_busy

        refuse_if_busy(run_dir, doing="train it")
        export_distributed_env(job_env)
        _link_rank_log(run_dir, job_env)
        if job_env.global_rank == 0:
            record_job(
                run_dir,
                job_env.job_id,
                self.launcher,
                event="start",
                restart=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
                host=socket.gethostname(),
                started=utc_now(),
                nodes=os.environ.get("SLURM_JOB_NODELIST") or socket.gethostname(),
            )
        train = _resolve(self.target)
        request_stop = _resolve(self.stop_target)
        caught: list[int] = []
        submitit_handler = signal.getsignal(preemption_signal(job_env))

        def on_preempt(signum: int, frame: Any) -> None:
            caught.append(signum)
            request_stop(f"signal {signal.Signals(signum).name}: preempted or out of time")

        signal.signal(preemption_signal(job_env), on_preempt)
        result: object = train(run_dir)
        state = result.get("state") if isinstance(result, dict) else None
        if state == "preempted":
            self._requeue(
                job_env, submitit_handler, caught[0] if caught else preemption_signal(job_env)
            )
        if state != "completed" or not isinstance(result, dict):
            raise RuntimeError(f"training of {self.run_dir} ended in state {state!r}: {result!r}")
        return result

    def _requeue(self, job_env: Any, submitit_handler: Any, signum: int) -> None:
        """After the save: rank 0 lets submitit checkpoint and requeue; every rank exits."""
        if job_env.global_rank == 0 and callable(submitit_handler):
            # Dumps self.checkpoint(), requeues (scontrol requeue / local requeue code) and
            # exits; raises UncompletedJobError when out of requeues (the job then fails).
            submitit_handler(signum, None)
        sys.exit(-1)  # no result for this attempt: the requeued one writes it

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook: the same run again; state lives on disk in ``last.pth``."""
        from submitit.core.utils import DelayedSubmission

        return DelayedSubmission(
            TrainJob(self.run_dir, self.launcher, self.target, self.stop_target)
        )
