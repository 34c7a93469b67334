"""The files a training run writes besides checkpoints: status, metrics lines, progress.

All JSON is written atomically (a reader such as ``tsrx status`` never sees half a file).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tsrx.runfiles import (
    METRICS,
    TENSORBOARD_DIR,
    atomic_write_text,
    write_status,
)

log = logging.getLogger("tsrx.train")  # the step and validation lines: the Trainer's log


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
    """Drop lines logged after the resumed step: the resumed run writes them again.

    A torn line (a crash mid-write) goes quietly; a damaged one (``42``, not JSON) goes with a
    warning naming its file and line; a file that is not text stops the resume with a
    :class:`~tsrx.runfiles.DamagedRunFile` saying what to do.
    """
    from tsrx.runfiles import metrics_lines

    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in metrics_lines(path.parent):
        if line.record is None:
            if line.problem is not None:
                log.warning("%s, dropped on resume", line.problem)
            continue
        if line.record.get("step", 0) <= step:
            keep.append(line.text)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def tensorboard_writer(folder: Path) -> Any:
    """A TensorBoard writer when the tensorboard package is installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


def plugin_records() -> list[dict[str, Any]]:
    from dataclasses import asdict

    from tsrx.checkpoint_components import components_of_loaded_plugins
    from tsrx.plugins import loaded_plugins

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


class RunLog:
    """What a run writes as it trains, on rank 0 only: ``metrics.jsonl`` lines, ``status.json``,
    TensorBoard scalars (when installed), the progress bar and the console's step lines.

    The Trainer decides what happened; this decides how it is written down.
    """

    def __init__(self, run_dir: Path, main: bool, total_steps: int):
        self.run_dir, self.main, self.total = Path(run_dir), main, total_steps
        self.metrics_path = self.run_dir / METRICS
        self.progress: Progress | None = None
        self._tb = tensorboard_writer(self.run_dir / TENSORBOARD_DIR) if main else None

    def append(self, line: dict[str, Any]) -> None:
        """One metrics.jsonl line; a full disk is named as such."""
        if not self.main:
            return
        from tsrx.runfiles import disk_full_error, dumps, is_disk_full

        text = dumps(line, indent=None, default=json_default) + "\n"
        try:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.metrics_path, len(text), exc) from None
            raise

    def status(self, state: str, step: int, error: str | None = None) -> None:
        if self.main:
            write_status(self.run_dir, state, step, self.total, error)

    def start_progress(self, step: int) -> None:
        self.progress = Progress(self.main, self.total, step)

    def advance(self, step: int, loss: float, lr: float, rate: float) -> None:
        """The progress bar after a step (every step; the lines come at ``log_every``)."""
        self._bar().update(step, loss, lr, rate)

    def _bar(self) -> Progress:
        if self.progress is None:
            raise RuntimeError("RunLog.start_progress comes before the first step")
        return self.progress

    def stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def forget_after(self, step: int) -> None:
        """On resume: drop the lines of steps after the checkpoint (they are redone)."""
        if self.main:
            truncate_metrics(self.metrics_path, step)

    def train(self, line: dict[str, Any]) -> None:
        """A ``{"kind": "train", ...}`` line: the file, TensorBoard, the console, status."""
        self.append(line)
        terms, combiner = line["terms"], line["combiner"]
        if self._tb is not None:
            scalars = {
                "loss": line["loss"],
                "lr": line["lr"],
                "samples_per_s": line["samples_per_s"],
                **{f"loss_{k}": v for k, v in terms.items()},
                **{k: v for k, v in combiner.items() if k != "type"},
            }
            for k, v in scalars.items():
                self._tb.add_scalar(f"train/{k}", v, line["step"])
        bar = self._bar()
        if not bar.live:
            log.info(
                "step %d/%d loss %.5g %s lr %.3g %.1f samples/s%s",
                line["step"],
                self.total,
                line["loss"],
                " ".join(f"{k} {v:.5g}" for k, v in {**terms, **combiner}.items() if k != "type"),
                line["lr"],
                line["samples_per_s"],
                bar.eta_text(),
            )
        self.status("running", line["step"])

    def validation(self, step: int, result: dict[str, Any]) -> None:
        """A validation result: the console line, a ``{"kind": "val"}`` line, TensorBoard."""
        avg = result["average"]
        shown = {
            **{f"acc[{j}]": v for j, v in (avg.get("acc_by_judge") or {}).items()},
            "psnr": avg["psnr"],
            "ssim": avg["ssim"],
        }
        log.info(
            "validation at step %d: %s",
            step,
            ", ".join(f"{k} {'-' if v is None else format(v, '.4f')}" for k, v in shown.items()),
        )
        self.append({"kind": "val", "step": step, "result": result})
        if self._tb is not None:
            for name, values in [*result["splits"].items(), ("average", avg)]:
                for metric in ("acc", "psnr", "ssim"):
                    if values[metric] is not None:
                        self._tb.add_scalar(f"val_{name}/{metric}", values[metric], step)
                for judge, value in (values.get("acc_by_judge") or {}).items():
                    if value is not None:
                        self._tb.add_scalar(f"val_{name}/acc_{judge}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
