"""The files a training run writes besides checkpoints: status, metrics lines, progress.

All JSON is written atomically (a reader such as ``tsrx status`` never sees half a file).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tsrx.runfiles import atomic_write_text, write_status  # noqa: F401 (the one home of run-file I/O)


def atomic_json(path: Path, data: Any) -> None:
    from tsrx import runfiles

    runfiles.atomic_json(path, data, default=json_default)


def json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after the resumed step: the resumed run writes them again."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def tensorboard_writer(folder: Path) -> Any:
    """A TensorBoard writer when the tensorboard package is installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def plugin_records() -> list[dict]:
    from dataclasses import asdict

    from tsrx.plugins import components_of_loaded_plugins, loaded_plugins

    # which plugin registered which component: `tsrx eval` of the checkpoint can then say
    # what to install or pass with --plugin, without importing anything the file names
    components = components_of_loaded_plugins()
    return [{**asdict(p), "components": components.get(p.name, [])} for p in loaded_plugins()]


class Progress:
    """A rich progress bar on rank 0 when stderr is a terminal; otherwise only an ETA string."""

    def __init__(self, main: bool, total: int, start: int):
        self.total, self.start, self.t0 = total, start, time.perf_counter()
        self.step = start
        self.live = main and sys.stderr.isatty()
        self._bar = None
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from tsrx.console import err_console

            self._bar = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=err_console,
            )
            self._task = self._bar.add_task("train", total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, loss: float, lr: float, rate: float) -> None:
        self.step = step
        if self._bar is not None:
            self._bar.update(
                self._task,
                completed=step,
                info=f"loss {loss:.4g}  lr {lr:.2e}  {rate:.1f} samples/s",
            )

    def eta_text(self) -> str:
        done = self.step - self.start
        if done <= 0:
            return ""
        left = (time.perf_counter() - self.t0) / done * (self.total - self.step)
        return f" eta {int(left) // 60}:{int(left) % 60:02d}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
