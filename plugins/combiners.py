"""Loss combiners: merge the per-task losses of a step into the one scalar to optimise.

A combiner is an ``nn.Module`` built with ``tasks`` (the engine's task names, e.g.
``["sr", "recognition"]``); its learned parameters are optimised with the model and
saved in checkpoints under ``combiner.*``. ``forward(losses)`` returns ``(total,
logs)``: ``logs`` holds each task loss as a float (and, for ``uncertainty``, ``s_<task>``
and ``sigma_<task>``) for ``metrics.jsonl``. ``describe()`` is what a run records about
the combiner (``metrics.jsonl`` ``"combiner"``, ``summary.json``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tsrx.errors import TsrxError
from tsrx.registry import COMBINERS


def _check_tasks(tasks: list[str], kind: str) -> list[str]:
    tasks = list(tasks)
    if not tasks:
        raise TsrxError(f"loss combiner {kind!r}: needs at least one task, got none")
    if len(set(tasks)) != len(tasks):
        raise TsrxError(f"loss combiner {kind!r}: task names repeat in {tasks}")
    return tasks


def _ordered(losses: dict[str, torch.Tensor], tasks: list[str], kind: str) -> list[torch.Tensor]:
    if set(losses) != set(tasks):
        raise TsrxError(
            f"loss combiner {kind!r} was built for tasks {tasks} but received "
            f"losses for {sorted(losses)}"
        )
    return [losses[t] for t in tasks]


def _floats(named: dict[str, torch.Tensor]) -> dict[str, float]:
    # one device->host copy for all values instead of one sync per value
    values = torch.stack([v.detach().float().reshape(()) for v in named.values()]).tolist()
    return dict(zip(named, values))


@COMBINERS.register("avg")
class AverageCombiner(nn.Module):
    """The plain mean of the task losses (no parameters)."""

    name = "avg"

    def __init__(self, tasks: list[str]):
        super().__init__()
        self.tasks = _check_tasks(tasks, self.name)

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = _ordered(losses, self.tasks, self.name)
        total = torch.stack(terms).mean()
        return total, _floats(dict(zip(self.tasks, terms)))

    def describe(self) -> dict:
        return {"type": self.name, "tasks": list(self.tasks)}


@COMBINERS.register("sum")
class SumCombiner(nn.Module):
    """The plain sum of the task losses (no parameters): TPGSR's and TATT's official
    ``loss_img + loss_recog_distill``."""

    name = "sum"

    def __init__(self, tasks: list[str]):
        super().__init__()
        self.tasks = _check_tasks(tasks, self.name)

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = _ordered(losses, self.tasks, self.name)
        return torch.stack(terms).sum(), _floats(dict(zip(self.tasks, terms)))

    def describe(self) -> dict:
        return {"type": self.name, "tasks": list(self.tasks)}


@COMBINERS.register("uncertainty")
class UncertaintyCombiner(nn.Module):
    """Homoscedastic task weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Each task has a learned ``s_i = log sigma_i^2`` (``self.log_var[task]``, starting at
    ``init``). Default form, for every task: ``exp(-s_i) * L_i + s_i``: the common
    implementation, numerically stable, with the same weights ``exp(-s_i)`` for all tasks.
    ``half_regression = true``: the paper's eq. (10) exactly, with ``log sigma_i = s_i / 2``:
    a regression task (in ``regression_tasks``) adds ``0.5 * exp(-s_i) * L_i + 0.5 * s_i``,
    any other task ``exp(-s_i) * L_i + 0.5 * s_i``.
    The total is the sum of the task terms (not the mean) as in the paper.
    """

    name = "uncertainty"

    def __init__(
        self,
        tasks: list[str],
        init: float = 0.0,
        half_regression: bool = False,
        regression_tasks: list[str] = ("sr",),
    ):
        super().__init__()
        self.tasks = _check_tasks(tasks, self.name)
        bad = [t for t in self.tasks if "." in t]
        if bad:
            raise TsrxError(f"loss combiner 'uncertainty': task names must not contain '.': {bad}")
        self.half_regression = half_regression
        self.regression_tasks = [t for t in regression_tasks if t in self.tasks]
        self.log_var = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(float(init))) for t in self.tasks}
        )

    def _coefficients(self, task: str) -> tuple[float, float]:
        """(loss factor, s factor) multiplying exp(-s) * L and s."""
        if not self.half_regression:
            return 1.0, 1.0
        return (0.5, 0.5) if task in self.regression_tasks else (1.0, 0.5)

    def forward(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        terms = _ordered(losses, self.tasks, self.name)
        total = None
        named: dict[str, torch.Tensor] = {}
        for task, loss in zip(self.tasks, terms):
            s = self.log_var[task]
            a, b = self._coefficients(task)
            term = a * torch.exp(-s) * loss + b * s
            total = term if total is None else total + term
            named[task] = loss
        for task in self.tasks:
            s = self.log_var[task].detach()
            named[f"s_{task}"] = s
            named[f"sigma_{task}"] = torch.exp(0.5 * s)
        return total, _floats(named)

    def describe(self) -> dict:
        s = {t: float(self.log_var[t].detach()) for t in self.tasks}
        return {
            "type": self.name,
            "tasks": list(self.tasks),
            "half_regression": self.half_regression,
            "regression_tasks": list(self.regression_tasks),
            "s": s,
            "sigma": {t: math.exp(0.5 * v) for t, v in s.items()},
        }
