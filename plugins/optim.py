"""Optimizers and learning-rate schedules, registered over torch.optim.

An optimizer component receives ``params`` (the trainable parameter groups) from
the engine; a scheduler receives ``optimizer`` and ``total_steps``.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from tsrx.config.schema import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
)
from tsrx.registry import OPTIMIZERS, SCHEDULERS

Beta = Annotated[float, Range(0, 1, high_open=True)]  # torch refuses betas outside [0, 1)


@OPTIMIZERS.register("adam")
def adam(
    params,
    lr: PositiveFloat = 1e-3,
    betas: list[Beta] = (0.9, 0.999),
    weight_decay: NonNegativeFloat = 0.0,
    eps: PositiveFloat = 1e-8,
) -> torch.optim.Optimizer:
    """Adam; TSRN's reference training uses lr 1e-3, betas (0.5, 0.999)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps)


@OPTIMIZERS.register("adamw")
def adamw(
    params,
    lr: PositiveFloat = 1e-3,
    betas: list[Beta] = (0.9, 0.999),
    weight_decay: NonNegativeFloat = 0.01,
    eps: PositiveFloat = 1e-8,
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=eps)


@OPTIMIZERS.register("sgd")
def sgd(
    params,
    lr: PositiveFloat = 1e-2,
    momentum: NonNegativeFloat = 0.9,
    weight_decay: NonNegativeFloat = 0.0,
    nesterov: bool = False,
) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )


@SCHEDULERS.register("constant")
def constant(optimizer, total_steps: int, warmup_steps: NonNegativeInt = 0):
    """Constant learning rate after an optional linear warm-up."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup_steps) if warmup_steps else 1.0
    )


@SCHEDULERS.register("cosine")
def cosine(
    optimizer, total_steps: int, warmup_steps: NonNegativeInt = 0, min_factor: Fraction = 0.0
):
    """Linear warm-up, then cosine decay to ``min_factor`` x the base rate."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@SCHEDULERS.register("step")
def step(optimizer, total_steps: int, step_size: PositiveInt = 1000, gamma: PositiveFloat = 0.1):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
