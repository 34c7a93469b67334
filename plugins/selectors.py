"""Checkpoint selectors: which validation result is the best so far.

A selector has a ``name`` (its key in ``summary.json``), a ``filename`` (the checkpoint
it keeps in the run directory) and ``score(result) -> float``, higher is better, on an
evaluation result (``{"splits": {...}, "average": {...}}``, see docs/architecture.md).
``best`` is generic: a best-SSIM selector is one line of TOML,
``selectors = ["best_acc", {type = "best", metric = "ssim"}]``.
"""

from __future__ import annotations

import math
from typing import Literal

from tsrx.errors import TsrxError
from tsrx.registry import SELECTORS


@SELECTORS.register("best")
class BestMetric:
    """The result with the highest (``mode = "max"``) or lowest (``"min"``) ``metric``.

    ``split = "average"`` reads ``result["average"]``, any other name
    ``result["splits"][split]``. The name defaults to ``best_<metric>`` (``best_<split>_<metric>``
    for one split) and the file to ``<name>_model.pth``. ``judge`` (metric ``acc``): follow
    that judge's accuracy (``acc_by_judge``) instead of the primary judge's (``acc``: the
    model's own recognizer, else the first of ``[eval.judges]``). A result whose metric is missing
    a value (None or NaN, e.g. accuracy without a recognizer) scores -inf: never the best.
    """

    def __init__(
        self,
        metric: str,
        split: str = "average",
        mode: Literal["max", "min"] = "max",
        filename: str | None = None,
        name: str | None = None,
        judge: str | None = None,
    ):
        if mode not in ("max", "min"):
            raise TsrxError(f"selector 'best': mode must be 'max' or 'min', got {mode!r}")
        self.metric, self.split, self.mode = metric, split, mode
        if judge is not None and metric != "acc":
            raise TsrxError(
                f"selector 'best': judge = {judge!r} applies to metric 'acc' only, not {metric!r}"
            )
        self.judge = judge
        default = f"best_{metric}" if split == "average" else f"best_{split}_{metric}"
        self.name = name or default
        self.filename = filename or f"{self.name}_model.pth"
        if "/" in self.filename or "\\" in self.filename or not self.filename.strip():
            raise TsrxError(
                f"selector {self.name!r}: filename must be a plain file name "
                f"inside the run directory, got {self.filename!r}"
            )

    def score(self, result: dict) -> float:
        if self.split == "average":
            values = result.get("average")
            where = "average"
        else:
            values = result.get("splits", {}).get(self.split)
            where = f"splits.{self.split}"
            if values is None:
                raise TsrxError(
                    f"selector {self.name!r}: the result has no split {self.split!r}; "
                    f"splits: {', '.join(result.get('splits', {})) or '(none)'}"
                )
        if values is None or self.metric not in values:
            known = ", ".join(values) if values else "(none)"
            raise TsrxError(
                f"selector {self.name!r}: the result's {where} has no metric "
                f"{self.metric!r}; metrics: {known}"
            )
        value = values[self.metric]
        if self.judge is not None:  # one judge's accuracy (docs/architecture.md: acc_by_judge)
            value = (values.get("acc_by_judge") or {}).get(self.judge)
        if value is None or math.isnan(float(value)):
            return -math.inf
        return float(value) if self.mode == "max" else -float(value)

    def __repr__(self) -> str:
        return (
            f"BestMetric(name={self.name!r}, metric={self.metric!r}, split={self.split!r}, "
            f"mode={self.mode!r}, filename={self.filename!r}, judge={self.judge!r})"
        )


@SELECTORS.register("best_acc")
def best_acc(split: str = "average", judge: str | None = None) -> BestMetric:
    """Highest accuracy (A-ACC by default) -> ``best_acc_model.pth``. ``judge``: whose
    accuracy (default: the model's own recognizer, else the first judge); the run records
    the judge followed next to the best result."""
    return BestMetric(
        "acc", split=split, name="best_acc", filename="best_acc_model.pth", judge=judge
    )


@SELECTORS.register("best_psnr")
def best_psnr(split: str = "average") -> BestMetric:
    """Highest PSNR (A-PSNR by default) -> ``best_psnr_model.pth``."""
    return BestMetric("psnr", split=split, name="best_psnr", filename="best_psnr_model.pth")
