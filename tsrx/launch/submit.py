"""From an experiment file to submitted jobs: run directories, submitit executors, arrays.

One job array per experiment when every run asks for the same resources (the usual
grid), else one job per run. Slurm submissions return at once with the job ids; the
local launcher has no queue, so it runs the jobs one after another and waits.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError
from tsrx.runfiles import CONFIG, SUBMITIT_DIR

LAUNCHERS = ("slurm", "local")


@dataclass
class PlannedRun:
    """One run and what submitting it would do to its directory."""

    spec: Any  # tsrx.config.experiment.RunSpec
    run_dir: Path
    action: str  # "new", "resume", "refused: ...", "force", "new dir"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    experiment: str
    file: Path
    launcher: str
    runs_dir: Path
    runs: list[PlannedRun]

    @property
    def as_array(self) -> bool:
        """All runs share resources (a single run is submitted as a plain job)."""
        first = json.dumps(self.runs[0].params, sort_keys=True, default=str)
        return len(self.runs) > 1 and all(
            json.dumps(r.params, sort_keys=True, default=str) == first for r in self.runs
        )

    @property
    def submitit_folder(self) -> Path:
        # An array shares one submitit folder, so it lives beside the run directories.
        return (self.runs_dir / self.experiment / SUBMITIT_DIR).absolute()


@dataclass
class Submitted:
    run: PlannedRun
    job_id: str
    job: Any = None


def slurm_parameters(config: dict[str, Any], job_name: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters from a run's ``[launcher]`` and ``[slurm]`` tables."""
    lau, slu = config.get("launcher", {}), config.get("slurm", {})
    gpus = int(lau.get("gpus_per_node", 0) or 0)
    params: dict[str, Any] = {
        "job_name": job_name,
        "nodes": int(lau.get("nodes", 1)),
        "ntasks_per_node": int(lau.get("tasks_per_node") or max(gpus, 1)),
        "cpus_per_task": int(lau.get("cpus_per_task", 1)),
        "time": int(lau.get("timeout_min") or SLURM_DEFAULT_TIME_MIN),
        "signal_delay_s": int(lau.get("signal_delay_s", 90)),
        "array_parallelism": int(lau.get("array_parallelism", 64)),
        "stderr_to_stdout": True,
    }
    if gpus:
        params["gpus_per_node"] = gpus
    if lau.get("mem"):
        params["mem"] = str(lau["mem"])
    for key, name in (
        ("partition", "partition"),
        ("account", "account"),
        ("qos", "qos"),
        ("constraint", "constraint"),
    ):
        if slu.get(key):
            params[name] = slu[key]
    if slu.get("setup"):
        params["setup"] = list(slu["setup"])
    if slu.get("extra"):
        params["additional_parameters"] = dict(slu["extra"])
    return params


NO_TIME_LIMIT_MIN = 60 * 24 * 365 * 10  # submitit's local controller needs a number
SLURM_DEFAULT_TIME_MIN = 60


def local_gpus() -> int:
    """GPUs this machine has (0 without CUDA)."""
    try:
        import torch

        return int(torch.cuda.device_count())
    except Exception:  # no torch build with CUDA, no driver: a CPU machine
        return 0


def local_cores() -> int:
    """Cores this process may use (its affinity, e.g. a cgroup or taskset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_parameters(
    config: dict[str, Any], gpus: int | None = None, cores: int | None = None
) -> dict[str, Any]:
    """submitit LocalExecutor parameters: ranks that fit this machine (one node).

    Ranks: ``launcher.tasks_per_node`` when set, else one per GPU here, else 1 (the
    ``gpus_per_node`` of a cluster job says nothing about this machine). Each rank gets
    ``threads`` (exported as TSRX_THREADS and OMP_NUM_THREADS to the ranks): ``launcher.threads``
    when set, else the submitting shell's ``TSRX_THREADS`` when set (what a user on a shared
    machine asked for), else ``cores // ranks`` (so ranks do not fight for cores). No time
    limit unless ``launcher.timeout_min`` is set.
    """
    from tsrx.engine.threads import requested_threads

    lau = config.get("launcher", {})
    if int(lau.get("nodes", 1)) != 1:
        raise TsrxError(
            f"launcher.nodes = {lau.get('nodes')}: the local launcher runs on one "
            "node; set launcher.nodes = 1 or use --launcher slurm"
        )
    gpus = local_gpus() if gpus is None else gpus
    cores = local_cores() if cores is None else cores
    ranks = int(lau.get("tasks_per_node") or max(gpus, 1))
    timeout = lau.get("timeout_min")
    return {
        "tasks_per_node": ranks,
        "gpus_per_node": min(gpus, ranks),
        "timeout_min": int(timeout) if timeout else NO_TIME_LIMIT_MIN,
        "signal_delay_s": int(lau.get("signal_delay_s", 90)),
        "stderr_to_stdout": True,
        "threads": int(lau.get("threads") or requested_threads() or max(1, cores // ranks)),
    }


@contextmanager
def rank_threads(threads: int | None) -> Iterator[None]:
    """TSRX_THREADS and OMP_NUM_THREADS for the local controller and its ranks.

    The controller copies this process's environment when it starts, and each rank copies
    the controller's, so the values hold before torch starts in the rank.
    """
    if not threads:
        yield
        return
    keys = ("TSRX_THREADS", "OMP_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: str(threads) for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _job_name(experiment: str, run: str | None) -> str:
    name = f"tsrx-{experiment}" + (f"-{run}" if run else "")
    return "".join(ch if ch.isalnum() or ch in "-_.=+," else "_" for ch in name)[:120]


def _action(spec: Any, run_dir: Path, force: bool, new: bool) -> str:
    from tsrx.config.toml_write import dumps
    from tsrx.launch.rundir import PLACEMENT_TABLES, _load_toml, config_differences

    cfg = run_dir / CONFIG
    if not cfg.exists():
        return "new"
    diffs = config_differences(
        _load_toml(cfg.read_text(encoding="utf-8")),
        _load_toml(dumps(spec.config)),
        ignore=PLACEMENT_TABLES,
    )
    if not diffs:
        return "resume"
    if force:
        return "replace (--force)"
    if new:
        return "new directory (--new)"
    return "refused: config differs in " + ", ".join(k for k, _, _ in diffs[:6])


def plan(
    file: str | Path,
    launcher: str | None = None,
    sets: list[str] | None = None,
    only: list[str] | None = None,
    force: bool = False,
    new: bool = False,
) -> Plan:
    """Expand and validate the experiment; decide launcher, resources and directories."""
    exp = load(file, launcher, sets, only)
    return plan_runs(exp, exp.runs, Path(file), force=force, new=new)


def load(
    file: str | Path,
    launcher: str | None = None,
    sets: list[str] | None = None,
    only: list[str] | None = None,
) -> Any:
    """The experiment (and its upstream stages) with ``--launcher`` as a ``--set``."""
    from tsrx.config.experiment import load_experiment

    if launcher is not None and launcher not in LAUNCHERS:
        raise TsrxError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    sets = list(sets or [])
    if launcher:
        sets.append(f"launcher.type={launcher}")
    exp = load_experiment(file, sets, only=only, for_training=True)
    if not exp.runs:
        raise TsrxError(f"{file}: the experiment has no runs")
    return exp


def plan_runs(
    exp: Any, specs: list[Any], file: Path, force: bool = False, new: bool = False
) -> Plan:
    """The plan for some runs (``specs``) of a loaded experiment."""
    kinds = {r.config["launcher"]["type"] for r in specs}
    if len(kinds) > 1:
        raise TsrxError(
            f"{file}: runs ask for different launchers ({', '.join(sorted(kinds))}); "
            "launcher.type cannot vary across a grid: pick one with --launcher"
        )
    kind = kinds.pop()
    dirs = {r.config["launcher"]["runs_dir"] for r in specs}
    if len(dirs) > 1:
        raise TsrxError(
            f"{file}: launcher.runs_dir cannot vary across a grid ({', '.join(sorted(dirs))})"
        )
    runs_dir = Path(dirs.pop())
    planned = []
    gpus = local_gpus() if kind == "local" else 0
    for spec in specs:
        params = (
            slurm_parameters(spec.config, _job_name(exp.name, None))
            if kind == "slurm"
            else local_parameters(spec.config, gpus=gpus)
        )
        run_dir = runs_dir / exp.name / spec.name
        planned.append(PlannedRun(spec, run_dir, _action(spec, run_dir, force, new), params))
    p = Plan(exp.name, Path(file), kind, runs_dir, planned)
    if not p.as_array:
        for r in p.runs:
            if kind == "slurm":
                r.params["job_name"] = _job_name(exp.name, r.spec.name)
    return p


def sbatch_script(p: Plan) -> str:
    """The sbatch file submitit would write for this plan (the array's, or the first job's)."""
    from tsrx.launch.job import SUBMITIT_RUNNER, sbatch_string

    folder = p.submitit_folder / "%j"
    command = f"{shlex.quote(sys.executable)} -u -m {SUBMITIT_RUNNER} {shlex.quote(str(folder))}"
    params = dict(p.runs[0].params)
    if p.as_array:
        params["map_count"] = len(p.runs)
    return sbatch_string(command, folder, **params)


def _check_sbatch() -> None:
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if missing:
        raise TsrxError(
            f"--launcher slurm: {' and '.join(missing)} not found on PATH (this machine "
            "is not a Slurm login node). Run here with --launcher local, or submit "
            "from the cluster's login node"
        )


def mark_queued(run_dir: Path) -> None:
    """meta.json's ``queued``: this (local) submitter will start the run in its turn, so
    ``tsrx status`` says queued while this process lives, not "not submitted"."""
    from tsrx.process import identity
    from tsrx.runfiles import read_meta, update_meta, utc_now

    jobs = len(read_meta(run_dir).get("jobs") or [])  # the mark ends with the next submission
    update_meta(
        run_dir,
        queued={"pid": os.getpid(), "process": identity(), "time": utc_now(), "jobs": jobs},
    )


def _executor(p: Plan, params: dict[str, Any]) -> Any:
    import submitit

    folder = p.submitit_folder / "%j"
    max_requeues = int(p.runs[0].spec.config["launcher"].get("max_requeues", 5))
    ex: submitit.Executor
    if p.launcher == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=max_requeues)
    else:
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=max_requeues)
    params = {k: v for k, v in params.items() if k != "threads"}  # ours, not submitit's
    try:
        ex.update_parameters(**params)
    except ValueError as exc:
        raise TsrxError(f"{p.file}: invalid launcher settings: {exc}") from None
    return ex


@contextmanager
def _interruptible_children() -> Iterator[None]:
    """Spawn with SIGINT at its default, even where this process ignores it.

    A shell without job control starts ``tsrx submit ... &`` with SIGINT ignored, and an
    ignored signal is inherited: submitit's local controller would then ignore the SIGINT
    that ``tsrx cancel`` (like submitit's ``LocalJob.cancel``) sends it, and its ranks train
    on. Only the spawn sees the default; this process keeps what its shell asked for.
    """
    import signal

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _drop_literal_job_folder(p: Plan) -> None:
    """submitit's local controller also makes an empty folder literally named ``%j``."""
    try:
        (p.submitit_folder / "%j").rmdir()
    except OSError:
        pass  # absent, or not empty


def _slurm_error(exc: Exception, p: Plan) -> TsrxError:
    msg = str(exc).strip() or type(exc).__name__
    return TsrxError(
        f"sbatch refused the job for {p.file} (check [slurm] partition/account/qos "
        f"and slurm.extra): {msg}"
    )


def submit(
    p: Plan,
    *,
    force: bool = False,
    new: bool = False,
    command: list[str] | None = None,
    wait_local: Callable[[Submitted], None] | None = None,
    on_submitted: Callable[[Submitted], None] | None = None,
) -> list[Submitted]:
    """Create the run directories and submit; refused directories stop everything first."""
    from submitit.core.utils import FailedJobError

    from tsrx.launch.job import TrainJob
    from tsrx.launch.rundir import prepare_run_dir, record_job
    from tsrx.runfiles import update_meta
    from tsrx.writer import submitting

    if p.launcher == "slurm":
        _check_sbatch()
    with submitting(p.submitit_folder, p.experiment):  # one submit of an experiment at a time
        refused = [r for r in p.runs if r.action.startswith("refused")]
        if refused:  # every conflict is reported before anything is created
            msgs = []
            for r in refused:
                try:
                    prepare_run_dir(r.spec, p.runs_dir, command=command)
                except TsrxError as exc:
                    msgs.append(str(exc))
            if msgs:
                raise TsrxError("\n".join(msgs))
        for r in p.runs:
            r.run_dir = prepare_run_dir(r.spec, p.runs_dir, force=force, new=new, command=command)
            update_meta(r.run_dir, submitit_folder=str(p.submitit_folder))
            if p.launcher == "local":
                mark_queued(r.run_dir)
        done: list[Submitted] = []

        def record(r: PlannedRun, job: Any) -> Submitted:
            s = Submitted(r, str(job.job_id), job)
            record_job(r.run_dir, s.job_id, p.launcher, event="submit")
            if on_submitted:
                on_submitted(s)
            done.append(s)
            return s

        jobs_of = {
            id(r): TrainJob(r.run_dir, p.launcher, r.spec.config["launcher"]["entry"])
            for r in p.runs
        }
        try:
            if p.launcher == "slurm" and p.as_array:
                ex = _executor(p, p.runs[0].params)
                with ex.batch():
                    jobs = [ex.submit(jobs_of[id(r)]) for r in p.runs]
                for r, job in zip(p.runs, jobs):
                    record(r, job)
            else:
                for r in p.runs:
                    with rank_threads(r.params.get("threads")), _interruptible_children():
                        job = _executor(p, r.params).submit(jobs_of[id(r)])
                    s = record(r, job)
                    if p.launcher == "local" and wait_local:
                        wait_local(s)
                        _drop_literal_job_folder(p)
        except FailedJobError as exc:
            raise _slurm_error(exc, p) from None
        return done
