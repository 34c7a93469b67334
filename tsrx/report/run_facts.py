"""Per-run facts shown beside the metrics: model size and training speed, from metrics.jsonl.

``params``: the parameters (not buffers) of the trained model, all parts, as the trainer
records them in its ``run`` line. ``samples/s``: the median ``samples_per_s`` of the
``train`` lines after the first (which includes start-up), or of the only one.
"""

from __future__ import annotations

import statistics
from typing import Any

LEAD = ("params",)
TRAIL = ("samples/s",)


def run_facts(metrics: list[dict[str, Any]]) -> dict[str, float | None]:
    params = None
    rates: list[float] = []
    for line in metrics:
        if line.get("kind") == "run" and isinstance(line.get("parameters"), dict):
            counts = [v for v in line["parameters"].values() if isinstance(v, int)]
            params = sum(counts) if counts else None
        elif line.get("kind") == "train" and _number(line.get("samples_per_s")):
            rates.append(float(line["samples_per_s"]))
    speed = statistics.median(rates[1:] if len(rates) > 1 else rates) if rates else None
    return {"params": params, "samples/s": speed}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def fmt_fact(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{int(value):,}" if column == "params" else f"{value:.1f}"
