"""``tsrx train FILE``: train an experiment's runs in the foreground.

``--nproc N`` starts N gloo processes on this machine (DDP on the CPU, or one GPU each
when CUDA is there); 1 trains in this process, or joins an existing torchrun/Slurm
environment. Ctrl-C once asks the run to stop at the next step boundary and save
``last.pth`` (the same command resumes it); twice aborts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from tsrx.cli.options import DEVICE_DEFAULT, DEVICE_HELP

SET_HELP = "Override a key, typed by the schema: --set train.steps=100 (repeatable)."


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    file: Path = typer.Argument(..., help="Experiment TOML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    run: list[str] = typer.Option([], "--run", help="Only the run(s) with this name or prefix."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes (DDP ranks) on this machine."),
    runs_dir: Path = typer.Option(
        None, "--runs-dir", help="Where run directories go (default: [launcher] runs_dir)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace a run directory whose config differs."
    ),
    new: bool = typer.Option(
        False, "--new", help="Start a new run directory beside a differing one."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the existing run from last.pth; with --set train.steps=N a finished "
        "run trains on to step N, exactly as a resumed run.",
    ),
    device: str = typer.Option(DEVICE_DEFAULT, "--device", help=DEVICE_HELP),
) -> None:
    """Train every run of FILE (or those named by --run), one after the other."""
    from tsrx.config.experiment import load_experiment
    from tsrx.launch.rundir import prepare_run_dir, record_job
    from tsrx.runfiles import utc_now

    if runs_dir is not None:
        # as [launcher] runs_dir, so a stage's `needs` finds its upstream runs there too
        set_ = [*set_, f"launcher.runs_dir={json.dumps(str(runs_dir))}"]
    exp = load_experiment(file, set_, only=run or None, for_training=True)
    states = []
    for spec in exp.runs:
        target = Path(spec.config.get("launcher", {}).get("runs_dir", "runs"))
        run_dir = prepare_run_dir(
            spec, target, force=force, new=new, resume=resume, command=sys.argv
        )
        typer.echo(f"run {spec.name}: {run_dir}", err=True)
        # this process is the run's job, as a local submitit job is: tsrx status can see it
        # running (pid alive), how long it took, and that it died if it did
        record_job(
            run_dir,
            str(os.getpid()),
            "local",
            event="start",
            host=socket.gethostname(),
            started=utc_now(),
            via="tsrx train",
        )
        state = train_run_dir(run_dir, nproc, device)
        states.append(state)
        if state != "completed":
            typer.echo(
                f"run {spec.name} stopped ({state}); the same command resumes it from "
                f"{run_dir / 'last.pth'}",
                err=True,
            )
            raise typer.Exit(130 if state == "preempted" else 1)


def train_run_dir(run_dir: Path, nproc: int, device: str | None) -> str:
    """Train one prepared run directory with ``nproc`` local processes; returns its state."""
    if nproc == 1:
        from tsrx.engine.run import run_training

        with _stop_on_ctrl_c():
            state: str = run_training(run_dir, device=device)["state"]
        return state
    from torch.multiprocessing.spawn import (
        ProcessExitedException,
        ProcessRaisedException,
        spawn,
    )

    from tsrx.engine.distributed import detect

    if detect().distributed:
        from tsrx.errors import TsrxError

        raise TsrxError(
            "--nproc starts its own processes; this process is already one rank of "
            "a torchrun/Slurm job (drop --nproc, the job's ranks are the processes)"
        )
    port = _free_port()
    try:
        with _stop_on_ctrl_c():  # the ranks get the same Ctrl-C and stop together
            spawn(  # type: ignore[no-untyped-call]  # torch's spawn() has no annotations
                _spawned_rank, args=(str(run_dir), nproc, port, device), nprocs=nproc, join=True
            )
    except (ProcessRaisedException, ProcessExitedException) as exc:
        from tsrx.errors import TsrxError

        error = _status(run_dir).get("error")
        if error is None:
            raise
        raise TsrxError(f"{run_dir}: a rank failed: {error}") from exc
    final: str = _status(run_dir)["state"]
    return final


def _status(run_dir: Path) -> dict[str, Any]:
    from tsrx.runfiles import read_status

    return read_status(run_dir)


def _spawned_rank(rank: int, run_dir: str, world: int, port: int, device: str | None) -> None:
    from tsrx.engine.distributed import DistEnv
    from tsrx.engine.run import run_training

    env = DistEnv(
        rank=rank,
        world_size=world,
        local_rank=rank,
        local_world_size=world,
        master_addr="127.0.0.1",
        master_port=port,
        source="spawn",
    )
    with _stop_on_ctrl_c():
        run_training(Path(run_dir), env=env, device=device)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _stop_on_ctrl_c:
    """First SIGINT: stop at the next step boundary and save; the second interrupts."""

    def __enter__(self) -> None:
        from tsrx.engine.signals import request_stop, stop_requested

        def handler(signum: int, frame: FrameType | None) -> None:
            if stop_requested() is not None:
                raise KeyboardInterrupt
            request_stop("interrupted (Ctrl-C)")

        try:
            self.previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
