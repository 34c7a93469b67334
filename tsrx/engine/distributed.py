"""The one place that reads the distributed environment and sets up process groups.

Three sources, checked in this order: torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; submitit's ``TorchDistributedEnvironment().export()``
writes the same variables), Slurm (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``,
``SLURM_JOB_NODELIST``, ``SLURM_JOB_ID``), or nothing (one process). A half-set
environment is refused rather than guessed around: a rank that guesses wrong waits
forever for peers that never come.

It also owns the rendezvous of a multi-node job: the master address (``MASTER_ADDR``,
else the first host of ``SLURM_JOB_NODELIST``; it must resolve on every node) and port
(:func:`port_for_job`), which the launcher's job exports with the same functions.
"""

from __future__ import annotations

import gc
import itertools
import os
import re
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
                "half-set torchrun environment: "
                + ", ".join(f"{v}={environ[v]}" for v in present)
                + " are set but "
                + ", ".join(missing)
                + " are not. Launch with torchrun (or "
                "submitit's TorchDistributedEnvironment().export()), or unset them for one process."
            )
        if not missing:
            return _checked(
                DistEnv(
                    rank=_int(environ, "RANK", "torchrun"),
                    world_size=_int(environ, "WORLD_SIZE", "torchrun"),
                    local_rank=_int(environ, "LOCAL_RANK", "torchrun"),
                    local_world_size=int(environ.get("LOCAL_WORLD_SIZE", environ["WORLD_SIZE"])),
                    master_addr=environ["MASTER_ADDR"],
                    master_port=_int(environ, "MASTER_PORT", "torchrun"),
                    source="torchrun",
                )
            )
    if "SLURM_PROCID" in environ:
        return _checked(_from_slurm(environ))
    return DistEnv()


def _from_slurm(environ: Mapping[str, str]) -> DistEnv:
    needed = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")
    missing = [v for v in needed if v not in environ]
    if missing:
        raise TsrxError(
            "half-set Slurm environment: SLURM_PROCID is set but "
            + ", ".join(missing)
            + " are not. Run the job's tasks with srun/submitit."
        )
    world = _int(environ, "SLURM_NTASKS", "Slurm")
    port = (
        int(environ["MASTER_PORT"])
        if "MASTER_PORT" in environ
        else port_for_job(environ["SLURM_JOB_ID"])
    )
    addr = environ.get("MASTER_ADDR") or first_host(environ["SLURM_JOB_NODELIST"])
    return DistEnv(
        rank=_int(environ, "SLURM_PROCID", "Slurm"),
        world_size=world,
        local_rank=_int(environ, "SLURM_LOCALID", "Slurm"),
        local_world_size=_tasks_on_node(environ, world),
        master_addr=addr,
        master_port=port,
        source="slurm",
    )


def _tasks_on_node(environ: Mapping[str, str], world: int) -> int:
    # SLURM_TASKS_PER_NODE looks like "4(x2),3": this node's count is the first group
    # when counts differ, which only matters for the thread split below.
    raw = environ.get("SLURM_NTASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "")
    m = re.match(r"(\d+)", raw)
    return int(m.group(1)) if m else world


def _checked(env: DistEnv) -> DistEnv:
    if env.world_size < 1 or not 0 <= env.rank < env.world_size:
        raise TsrxError(
            f"{env.source} environment: rank {env.rank} is outside world size {env.world_size}"
        )
    if env.local_rank < 0:
        raise TsrxError(f"{env.source} environment: negative local rank {env.local_rank}")
    return env


def port_for_job(job_id: str) -> int:
    """The master port of a job: from its id, the same on every rank of every node.

    The one place the port is computed (the launcher's job and the Slurm environment
    reader both call it). Ranks of one job agree without talking, and concurrent jobs
    on a node differ: consecutive ids never collide within the 12768 ports of
    PORT_RANGE. Slurm gives every array task its own ``SLURM_JOB_ID``, so the id
    alone tells jobs apart (appending the array index made job 12 task 3 and job 1
    task 23 collide); ``123_4`` counts as ``1234``. submitit's own choice
    (20000-60000) can land in the ephemeral range and clash with outgoing connections.
    """
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    low, high = PORT_RANGE
    return low + int(digits) % (high - low + 1)


def hostnames(nodelist: str) -> list[str]:
    """Every host of a Slurm node list, in Slurm's order.

    ``scontrol show hostnames`` when it is on PATH (Slurm's own reading), else
    :func:`expand_hostlist`. The first host is the job's master address.
    """
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
        if out:
            return out
    except (OSError, subprocess.SubprocessError):
        pass
    return expand_hostlist(nodelist)


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (the node of rank 0, the master address)."""
    return hostnames(nodelist)[0]


def expand_hostlist(nodelist: str) -> list[str]:
    """Slurm's compressed host list, expanded without Slurm.

    ``n[1-3,5],gpu01`` -> n1 n2 n3 n5 gpu01; ``gpu[003-005]`` keeps the zero padding of
    the range's first number (``n[1-02]`` -> n1 n2); several bracket groups in one name
    expand as a product, the last group fastest (``r[1-2]n[1-2]`` -> r1n1 r1n2 r2n1 r2n2),
    as ``scontrol show hostnames`` does (tests/test_slurm_multinode.py compares them).
    Text after a bracket (``n[1-2]-ib``) is accepted, though Slurm 22.05 rejects it.
    Anything else is a TsrxError naming the list.
    """

    def bad(why: str) -> TsrxError:
        return TsrxError(
            f"SLURM_JOB_NODELIST={nodelist!r}: {why} (expected Slurm's host list "
            "syntax, e.g. 'n[1-3,5],gpu01')"
        )

    hosts: list[str] = []
    for item in _split_top_level(nodelist.strip(), bad):
        parts: list[list[str]] = []
        for token in re.split(r"(\[[^\[\]]*\])", item):
            if token.startswith("["):
                parts.append(_expand_ranges(token[1:-1], bad))
            elif "[" in token or "]" in token:
                raise bad(f"unbalanced bracket in {item!r}")
            elif token:
                parts.append([token])
        hosts.extend("".join(combo) for combo in itertools.product(*parts))
    if not hosts:
        raise bad("no host name in it")
    return hosts


def _split_top_level(nodelist: str, bad: Any) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in nodelist:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth not in (0, 1):
            raise bad("unbalanced bracket")
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise bad("unbalanced bracket")
    items.append(current)
    if any(not i.strip() for i in items):
        raise bad("empty host name")
    return [i.strip() for i in items]


def _expand_ranges(spec: str, bad: Any) -> list[str]:
    out: list[str] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", part)
        if not m:
            raise bad(f"[{spec}] holds {part!r}, not a number or a range a-b")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise bad(f"range {part!r} runs backwards")
        width = len(lo)
        out.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
    return out


def node_name(environ: Mapping[str, str] | None = None) -> str:
    """This process's node as Slurm names it (``SLURMD_NODENAME``), else the host name.

    They differ when one machine runs several Slurm nodes, and on clusters whose node
    names are not host names.
    """
    environ = os.environ if environ is None else environ
    return environ.get("SLURMD_NODENAME") or socket.gethostname()


def check_master_address(env: DistEnv) -> None:
    """Fail clearly when the master address does not resolve on this node.

    init_process_group would otherwise retry until its timeout (minutes) and say only
    that it could not connect. The address comes from MASTER_ADDR or the first host of
    SLURM_JOB_NODELIST, so a cluster must resolve its node names on every node.
    """
    if not env.distributed or not env.master_addr:
        return
    try:
        socket.getaddrinfo(env.master_addr, env.master_port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TsrxError(
            f"rank {env.rank} on node {node_name()}: the master address {env.master_addr!r} "
            f"(MASTER_ADDR, else the first host of SLURM_JOB_NODELIST="
            f"{os.environ.get('SLURM_JOB_NODELIST', '<unset>')!r}) does not resolve: {exc}. "
            "Every node must resolve the job's node names (DNS or /etc/hosts); or export "
            "MASTER_ADDR as an address all ranks can reach (docs/engine.md, DDP)"
        ) from None


# -- process group --------------------------------------------------------------------
def setup(env: DistEnv, device: str | None = None) -> Any:
    """Pick this rank's device, init the process group when there are several ranks.

    Returns the torch.device. nccl on CUDA, gloo on CPU. When ranks share the CPU each
    gets an equal share of its threads (on 2 cores with 2 ranks: 1 thread each), since
    oversubscribed intra-op threads make every rank several times slower.
    """
    import torch
    import torch.distributed as dist

    # the rule of every command's --device (tsrx.engine.loading.resolve_device): auto = CUDA
    # when available, else the CPU
    want = device if device not in (None, "", "auto") else ""
    want = want or ("cuda" if torch.cuda.is_available() else "cpu")
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
        check_master_address(env)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank,
            world_size=env.world_size,
        )
    return dev


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(tensor: Any) -> Any:
    """Sum ``tensor`` over ranks in place (a no-op with one process); returns it."""
    if active():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` with one process)."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
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
