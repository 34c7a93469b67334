"""Tables owned by the launcher: ``[launcher]`` and ``[slurm]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from tsrx.config.schema import TRAINER_ENTRY, NonNegative, Positive
from tsrx.config.sections import section


@dataclass
class LauncherSection:
    """``[launcher]``: where and how big each run's job is.

    ``tasks_per_node`` defaults to ``gpus_per_node`` (one rank per GPU) on Slurm, and to the
    GPUs of the machine (1 without any; gloo on CPU) for ``local``, where each rank gets
    ``threads`` threads (exported to each rank as TSRX_THREADS), else the launching shell's
    TSRX_THREADS, else cores / ranks. ``timeout_min`` is the job's time limit (unset: 60 on Slurm,
    none for a local run); SIGUSR2
    comes ``signal_delay_s`` before it, the run saves and is requeued (at most
    ``max_requeues`` times for time limits; preemptions do not count). ``entry`` is the
    ``module:function`` each rank calls with the run directory.
    """

    type: Literal["local", "slurm"] = "local"
    runs_dir: str = "runs"
    nodes: Annotated[int, Positive] = 1
    gpus_per_node: Annotated[int, NonNegative] = 4
    tasks_per_node: Annotated[int, Positive] | None = None
    cpus_per_task: Annotated[int, Positive] = 1
    threads: Annotated[int, Positive] | None = (
        None  # per local rank; None: $TSRX_THREADS, cores // ranks
    )
    mem: str | None = None
    timeout_min: Annotated[int, Positive] | None = None
    signal_delay_s: Annotated[int, NonNegative] = 90
    array_parallelism: Annotated[int, Positive] = 64
    max_requeues: Annotated[int, NonNegative] = 5
    entry: str = TRAINER_ENTRY


@dataclass
class SlurmSection:
    """``[slurm]``: cluster specifics; ``extra`` holds any further sbatch parameter."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


section("launcher")(LauncherSection)
section("slurm")(SlurmSection)
