"""The one place that reads the distributed environment and sets up process groups.

Three sources, checked in this order: torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; submitit's ``TorchDistributedEnvironment().export()``
writes the same variables), Slurm (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``,
``SLURM_JOB_NODELIST``, ``SLURM_JOB_ID``), or nothing (one process). A half-set
environment is refused rather than guessed around: a rank that guesses wrong waits
forever for peers that never come.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any, Mapping

from tsrx.errors import TsrxError

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
PORT_RANGE = (20000, 32767)  # below Linux's ephemeral range (32768-60999), see slurm notes


@dataclass(frozen=True)
class DistEnv:
    """Who this process is among the ranks of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None
    source: str = "none"  # "torchrun", "slurm" or "none"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(environ: Mapping[str, str], name: str, source: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise TsrxError(f"{source} environment: {name}={value!r} is not an integer") from None


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The distributed environment of this process (see the module docstring)."""
    environ = os.environ if environ is None else environ
    present = [v for v in TORCHRUN_VARS if v in environ]
    if present:
        missing = [v for v in TORCHRUN_VARS if v not in environ]
        # MASTER_ADDR/PORT alone are harmless leftovers (tests, notebooks): only the rank
        # variables mark a torchrun-style launch.
        if missing and any(v in present for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
            raise TsrxError(
                "half-set torchrun environment: " + ", ".join(f"{v}={environ[v]}" for v in present)
                + " are set but " + ", ".join(missing) + " are not. Launch with torchrun (or "
                "submitit's TorchDistributedEnvironment().export()), or unset them for one process.")
        if not missing:
            return _checked(DistEnv(
                rank=_int(environ, "RANK", "torchrun"),
                world_size=_int(environ, "WORLD_SIZE", "torchrun"),
                local_rank=_int(environ, "LOCAL_RANK", "torchrun"),
                local_world_size=int(environ.get("LOCAL_WORLD_SIZE", environ["WORLD_SIZE"])),
                master_addr=environ["MASTER_ADDR"],
                master_port=_int(environ, "MASTER_PORT", "torchrun"),
                source="torchrun"))
    if "SLURM_PROCID" in environ:
        return _checked(_from_slurm(environ))
    return DistEnv()


def _from_slurm(environ: Mapping[str, str]) -> DistEnv:
    needed = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
    missing = [v for v in needed if v not in environ]
    if missing:
        raise TsrxError("half-set Slurm environment: SLURM_PROCID is set but "
                        + ", ".join(missing) + " are not. Run the job's tasks with srun/submitit.")
    world = _int(environ, "SLURM_NTASKS", "Slurm")
    port = (int(environ["MASTER_PORT"]) if "MASTER_PORT" in environ
            else port_for_job(environ["SLURM_JOB_ID"]))
    addr = environ.get("MASTER_ADDR") or first_host(environ["SLURM_JOB_NODELIST"])
    return DistEnv(rank=_int(environ, "SLURM_PROCID", "Slurm"), world_size=world,
                   local_rank=_int(environ, "SLURM_LOCALID", "Slurm"),
                   local_world_size=_tasks_on_node(environ, world),
                   master_addr=addr, master_port=port, source="slurm")


def _tasks_on_node(environ: Mapping[str, str], world: int) -> int:
    # SLURM_TASKS_PER_NODE looks like "4(x2),3": this node's count is the first group
    # when counts differ, which only matters for the thread split below.
    raw = environ.get("SLURM_NTASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "")
    m = re.match(r"(\d+)", raw)
    return int(m.group(1)) if m else world


def _checked(env: DistEnv) -> DistEnv:
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise TsrxError(f"{env.source} environment: rank {env.rank} is outside world size "
                        f"{env.world_size}")
    if env.local_rank < 0:
        raise TsrxError(f"{env.source} environment: negative local rank {env.local_rank}")
    return env


def port_for_job(job_id: str) -> int:
    """A master port from the job id, the same on every rank of the job.

    Slurm gives every array task its own ``SLURM_JOB_ID``, so the id alone tells jobs
    apart (appending the array index made job 12 task 3 and job 1 task 23 collide).
    """
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    low, high = PORT_RANGE
    return low + int(digits) % (high - low + 1)


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list: ``scontrol show hostnames`` when available, else parsed."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=20, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return parse_first_host(nodelist)


def parse_first_host(nodelist: str) -> str:
    """``gpu[003-005,9],cpu1`` -> ``gpu003``; ``node1,node2`` -> ``node1``."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m or not m.group(1):
        raise TsrxError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot read a host name from it")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


# -- process group --------------------------------------------------------------------
def setup(env: DistEnv, device: str | None = None) -> "Any":
    """Pick this rank's device, init the process group when there are several ranks.

    Returns the torch.device. nccl on CUDA, gloo on CPU. When ranks share the CPU each
    gets an equal share of its threads (on 2 cores with 2 ranks: 1 thread each), since
    oversubscribed intra-op threads make every rank several times slower.
    """
    import torch
    import torch.distributed as dist

    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TsrxError(f"device {want!r} requested but CUDA is not available; use cpu")
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
        if env.local_world_size > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // env.local_world_size))
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{env.master_addr}:{env.master_port}",
                                rank=env.rank, world_size=env.world_size)
    return dev


def active() -> bool:
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if active():
        import torch.distributed as dist
        dist.barrier()


def all_reduce_sum(tensor: "Any") -> "Any":
    """Sum ``tensor`` over ranks in place (a no-op with one process); returns it."""
    if active():
        import torch.distributed as dist
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` with one process)."""
    if not active():
        return [obj]
    import torch.distributed as dist
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Leave the process group cleanly.

    Callers drop their DDP wrapper and optimizer first; then gc, barrier and destroy.
    Without this, a few percent of Slurm DDP jobs end FAILED ("terminate called without
    an active exception") after writing results (measured: shared/notes/slurm-single-node.md).
    """
    gc.collect()
    if active():
        import torch.distributed as dist
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
