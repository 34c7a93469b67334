"""What every benchmark shares: the machine record, interleaved timing, rows, atomic JSON.

Why interleaved: the machines these run on are often shared, so load drifts during a run.
Timing baseline and tsrx in alternating rounds (order rotated each round) and taking the
median per variant exposes both to the same drift, so their ratio stays meaningful even
when the absolute rates do not. CPU time (``time.process_time``) is recorded next to wall
time because it does not count the time the process waited for a core.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The record of where the figures came from (stored in results.json)."""
    import torch

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def row(
    item: str,
    name: str,
    value: float | None,
    unit: str,
    target: str | None = None,
    ok: bool | None = None,
    **detail: Any,
) -> dict:
    """One line of the results table; ``ok`` is None where no target applies."""
    return {
        "item": item,
        "name": name,
        "value": value,
        "unit": unit,
        "target": target,
        "ok": ok,
        "detail": detail,
    }


def interleaved(
    variants: dict[str, Callable[[], Any]],
    warmup: int,
    reps: int,
    sync: Callable[[], None] | None = None,
) -> dict[str, dict]:
    """Time each variant ``reps`` times in rotated rounds after ``warmup`` calls each.

    Returns per variant: ``wall`` and ``cpu`` lists of seconds, their medians, and
    ``first``: what the variant's first (warm-up) call returned.
    """
    names = list(variants)
    out = {n: {"wall": [], "cpu": [], "first": None} for n in names}
    for n in names:
        for i in range(warmup):
            value = variants[n]()
            if i == 0:
                out[n]["first"] = value
    for r in range(reps):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            if sync:
                sync()
            w0, c0 = time.perf_counter(), time.process_time()
            value = variants[n]()
            if sync:
                sync()
            out[n]["wall"].append(time.perf_counter() - w0)
            out[n]["cpu"].append(time.process_time() - c0)
            if out[n]["first"] is None:
                out[n]["first"] = value
    for n in names:
        out[n]["wall_median"] = statistics.median(out[n]["wall"])
        out[n]["cpu_median"] = statistics.median(out[n]["cpu"])
    return out


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON via a temp file in the same folder, fsync, rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def flop_counter():
    """``FlopCounterMode`` that also counts the in-place matmuls (``addmm_``, ``baddbmm_``).

    torch's counter keys its formulas by op, and the in-place variants are other ops: it
    does not count them. tsrx's hand-written GRU backward accumulates its gradients with
    them, so without these entries its step would look ~40 GFLOP cheaper than it is.
    """
    import torch
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def same_as(op):
        def count(*args, **kwargs):
            return fc.flop_registry[op](*args, **kwargs)

        count._get_raw = True  # the registry's entry already reads shapes: no second wrapper
        return count

    mapping = {aten.addmm_: same_as(aten.addmm), aten.baddbmm_: same_as(aten.baddbmm)}
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


# The TSRN training run the train and precision benches time (the official setting: mask,
# STN, Adam at 1e-3, gradient clip 0.25); {synth} is a [data] synth line or empty.
TSRN_EXPERIMENT = """\
name = "{name}"
seed = 0

[data]
root = "{root}"
{synth}train = {{ type = "textzoom", roots = ["train1"] }}
num_workers = 0

[model]
sr = {{ type = "tsrn", mask = true, stn = true }}

[optim]
type = "adam"
lr = 1e-3
betas = [0.5, 0.999]

[train]
steps = 1000000
batch_size = {batch}
grad_clip = 0.25
selectors = ["best_psnr"]
"""
