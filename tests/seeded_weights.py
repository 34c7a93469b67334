"""Deterministic weights for a state_dict layout: the evidence for official backbones.

The recorder (tests/fixtures/backbones/record_backbones.py) runs the official code with
weights drawn here from a seed and the official model's key/shape list, and stores only that
list, the inputs and the outputs; the test draws the same weights for the tsrx model, so no
large state_dict is committed. Shared by both sides, so it holds no model code.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def layout(model: nn.Module) -> list[tuple[str, list[int], str, str]]:
    """(key, shape, dtype, kind) of every state_dict entry in order; kind is ``param``,
    ``mean``/``var``/``count`` (BatchNorm statistics) or ``constant`` (a fixed buffer)."""
    params = {name for name, _ in model.named_parameters()}
    out = []
    for key, value in model.state_dict().items():
        if key in params:
            kind = "param"
        elif key.endswith("running_mean"):
            kind = "mean"
        elif key.endswith("running_var"):
            kind = "var"
        elif key.endswith("num_batches_tracked"):
            kind = "count"
        else:
            kind = "constant"
        out.append((key, list(value.shape), str(value.dtype).replace("torch.", ""), kind))
    return out


def seeded_state(
    entries: list, seed: int, constants: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Weights for ``entries`` (from :func:`layout`) drawn in order from one generator.

    Matrices ~ N(0, 1/fan_in); 1-D weights (scales) ~ 1 + N(0, 0.1^2); other 1-D
    parameters (biases) ~ N(0, 0.1^2); BatchNorm means ~ N(0, 0.1^2) and variances in
    [0.5, 1.5). ``constant`` buffers are not drawn: they come from ``constants`` (each
    side's own model), so fixed tables such as the TPS matrices are each side's own.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype, kind in entries:
        shape = tuple(shape)
        if kind == "constant":
            state[key] = constants[key]
        elif kind == "count":
            state[key] = torch.tensor(7, dtype=getattr(torch, dtype))
        elif kind == "mean":
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        elif kind == "var":
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) > 1:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        elif key.rsplit(".", 1)[-1] in ("weight", "a_2"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state
