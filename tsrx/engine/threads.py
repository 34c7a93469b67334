"""CPU threads: each process computes with the cores it was given, set once at start.

torch's default is one thread per core of the machine. On a shared node (other jobs, or
several ranks of one run) every process then runs that many threads on the few cores it has,
and training slows by orders of magnitude (issue 14: from ~40 to ~0.5 samples/s). The
count, first that applies:

1. ``TSRX_THREADS`` (the local launcher sets it per rank; a user may set it);
2. Slurm's ``SLURM_CPUS_PER_TASK`` (``[launcher] cpus_per_task``);
3. torch's default (which honours ``OMP_NUM_THREADS``), bounded by the cores this process
   may run on (``os.sched_getaffinity``) divided among the ranks on this machine.

The result is recorded in the run's ``meta.json`` (``threads``). Data-loader workers use one
thread each (tsrx.data.loader.single_thread_worker).
"""

from __future__ import annotations

import os

from tsrx.memory_reuse import keep_freed_memory

ENV = "TSRX_THREADS"
_configured: dict[str, int | str] | None = None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _positive(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    from tsrx.errors import TsrxError

    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise TsrxError(f"{name}={raw!r}: expected a positive integer (CPU threads per process)")
    return value


def requested_threads() -> int | None:
    """``TSRX_THREADS`` as the user set it (None when unset); an error names a bad value."""
    return _positive(ENV)


def decide_threads(local_world_size: int | None = None) -> tuple[int, str]:
    """(threads, where the number came from), without changing anything."""
    import torch

    explicit = _positive(ENV)
    if explicit is not None:
        return explicit, ENV
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm), "SLURM_CPUS_PER_TASK"
    ranks = local_world_size or int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    share = max(1, usable_cores() // max(1, ranks))
    default = torch.get_num_threads()
    if default <= share:
        source = "OMP_NUM_THREADS" if os.environ.get("OMP_NUM_THREADS") else "torch default"
        return default, source
    return (
        share,
        f"cores available to this process ({usable_cores()}) / ranks on this machine ({ranks})",
    )


def configure_threads(local_world_size: int | None = None) -> dict[str, int | str]:
    """Set torch's intra-op threads once per process, and glibc's reuse of freed memory
    (``tsrx.memory_reuse``); returns ``{"threads", "source", "cores", "malloc"}``."""
    global _configured
    if _configured is not None:
        return dict(_configured)
    import torch

    threads, source = decide_threads(local_world_size)
    torch.set_num_threads(threads)
    # the process that computes is set up here: its allocator too (tsrx.memory_reuse)
    malloc = keep_freed_memory()
    _configured = {"threads": threads, "source": source, "cores": usable_cores(), "malloc": malloc}
    return dict(_configured)
