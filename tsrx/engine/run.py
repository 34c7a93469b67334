"""Train the run in a run directory: the entry point of every launcher.

``run_training(run_dir)`` reads ``run_dir/config.toml`` (loading the plugins it names),
detects the distributed environment, resumes from ``last.pth`` when present, trains,
evaluates the final model, and writes status.json, metrics.jsonl, summary.json,
checkpoints and ``logs/rank<R>.log``. The same call serves the foreground command
(``tsrx train``), spawned CPU ranks and the submitit job.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from tsrx.engine import distributed as dist_utils
from tsrx.engine import signals
from tsrx.runfiles import CONFIG, LAST, rank_log, read_config

log = logging.getLogger("tsrx")


def load_run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config of ``run_dir/config.toml``, validated again (plugins loaded)."""
    from tsrx.config.experiment import load_experiment
    from tsrx.errors import TsrxError

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise TsrxError(
            f"{run_dir}: no config.toml (create run directories with `tsrx train` or `tsrx submit`)"
        )
    read_config(run_dir)  # not text, not TOML: a DamagedRunFile naming the file and line
    return load_experiment(path).runs[0].config


def run_training(
    run_dir: Path,
    env: dist_utils.DistEnv | None = None,
    device: str | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Train ``run_dir`` to the end (or to a stop request); returns the final state.

    ``{"state": "completed" | "preempted", "step", "total_steps", "final", "run_dir"}``.
    ``console`` (rank 0) receives the final table; stdout when None.
    """
    from tsrx.engine.trainer import Trainer
    from tsrx.runfiles import write_status

    run_dir = Path(run_dir)
    env = env or dist_utils.detect()
    handlers = _setup_logging(run_dir, env)
    trainer = None
    failed = False
    lock = None
    try:
        config = load_run_config(run_dir)
        dev = dist_utils.setup(env, device)
        lock = _take_run_dir(run_dir, env, dev)
        _record_threads(run_dir, env)
        log.info(
            "run %s: rank %d of %d on node %s, %s (%s; master %s:%s)",
            run_dir,
            env.rank,
            env.world_size,
            dist_utils.node_name(),
            dev,
            env.source,
            env.master_addr,
            env.master_port,
        )
        trainer = Trainer(config, run_dir, env, dev)
        last = run_dir / LAST
        if last.exists():
            trainer.resume(last)
        result = trainer.train()
        final = None
        if result["state"] == "completed":
            final = trainer.final_evaluation()
            if env.is_main and final is not None:
                from tsrx.engine.result_view import print_result

                if console is None:
                    from rich.console import Console

                    console = Console()
                print_result(
                    console, final, title=f"{run_dir.parent.name}/{run_dir.name}: final model"
                )
        trainer.write_summary(final, result["state"])
        if result["state"] == "completed":
            trainer.mark_completed()
        result["final"] = final
        return result
    except BaseException as exc:
        failed = True
        from tsrx.writer import RunDirBusy

        if env.is_main and not isinstance(exc, RunDirBusy):  # the holder owns status.json
            step = trainer.step if trainer is not None else 0
            total = trainer.train_cfg["steps"] if trainer is not None else 0
            write_status(run_dir, "failed", step, total, f"{type(exc).__name__}: {exc}")
        log.error("run failed: %s: %s", type(exc).__name__, exc)
        raise
    finally:
        if trainer is not None:
            trainer.close()
        del trainer
        if lock is not None:
            lock.release()
        if failed:
            _destroy_without_barrier()  # peers may be gone: a barrier could wait forever
        else:
            dist_utils.shutdown()
        signals.clear()
        for h in handlers:
            logging.getLogger("tsrx").removeHandler(h)
            h.close()


def _take_run_dir(run_dir: Path, env: dist_utils.DistEnv, dev: Any) -> Any:
    """Rank 0 takes the run directory's writer lock; all ranks agree before anyone writes.

    Taken after the process group exists (every rank has joined), so the ranks' own probes
    (tsrx.launch.job) are over. Temp files of writers that died are removed by the new one.
    """
    from tsrx.writer import RunDirBusy, WriterLock

    lock, busy = None, None
    if env.is_main:
        try:
            lock = WriterLock(run_dir).acquire()
        except RunDirBusy as exc:
            busy = exc
    if env.distributed:
        import torch

        flag = dist_utils.all_reduce_sum(torch.tensor([1.0 if busy else 0.0], device=dev))
        if float(flag.item()) > 0 and busy is None:
            if lock is not None:
                lock.release()
            raise RunDirBusy(f"run directory {run_dir}: rank 0 found another writer; not training")
    if busy is not None:
        raise busy
    if env.is_main:
        from tsrx.runfiles import clean_stale_temps

        for path in clean_stale_temps(run_dir):
            log.info("removed %s, left by a writer that died", path.name)
    return lock


def _record_threads(run_dir: Path, env: dist_utils.DistEnv) -> None:
    """Set this process's CPU threads once (tsrx.engine.threads) and record them in meta.json."""
    from tsrx.engine.threads import configure_threads

    threads = configure_threads(env.local_world_size)
    log.info("rank %d uses %d CPU thread(s) (%s)", env.rank, threads["threads"], threads["source"])
    if env.is_main:
        from tsrx.runfiles import update_meta

        update_meta(run_dir, threads=threads)


def _destroy_without_barrier() -> None:
    if dist_utils.active():
        import torch.distributed as dist

        dist.destroy_process_group()


def _setup_logging(run_dir: Path, env: dist_utils.DistEnv) -> list[logging.Handler]:
    """``logs/rank<R>.log`` per rank, and rank 0's messages on the terminal.

    Every line names its rank and node (``rank2@n2``): on a multi-node job the logs of
    one run come from several machines.

    A submitit job links ``logs/rank<R>.log`` to its own stdout file; then the log goes
    to stdout instead of being written twice.
    """
    logger = logging.getLogger("tsrx")
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter(
        f"%(asctime)s rank{env.rank}@{dist_utils.node_name()} %(levelname)s %(name)s: %(message)s"
    )
    link = rank_log(run_dir, env.rank)
    handlers: list[logging.Handler] = []
    if link.is_symlink():
        handlers.append(logging.StreamHandler(sys.stdout))
    else:
        link.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(link, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(fmt)
    if env.is_main and not link.is_symlink():
        if sys.stderr.isatty():
            from rich.logging import RichHandler

            from tsrx.console import err_console

            console_handler: logging.Handler = RichHandler(console=err_console, show_path=False)
        else:
            console_handler = logging.StreamHandler(sys.stderr)
            console_handler.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(console_handler)
    for h in handlers:
        logger.addHandler(h)
    return handlers
