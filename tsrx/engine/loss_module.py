"""How one batch becomes the training loss: the model's terms, each term's loss, the combiner.

``LossModule`` holds model, losses and combiner in one module, so the combiner's learned
weights (``uncertainty``) sit inside what DDP wraps and are averaged like the model's
gradients. It names no model output: the model says what each term's loss reads
(``model.loss_inputs``); here every call of a term's loss is summed (a cascade's stages),
a loss that returns named sub-terms gives one term each, and the combiner gets them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

LossInputs = Callable[[dict[str, Any], dict[str, Any]], dict[str, list[tuple[Any, ...]]]]


def term_names(term: str, loss: nn.Module) -> list[str]:
    """The names under which ``loss`` (the loss of ``term``) is logged and combined: the term
    itself, or ``<term>_<name>`` for each named sub-term of a loss that declares ``terms``."""
    names = getattr(loss, "terms", None)
    return [term] if names is None else [f"{term}_{n}" for n in names]


class LossModule(nn.Module):
    """model -> term losses -> combiner: the unit DDP wraps."""

    def __init__(self, model: nn.Module, losses: dict[str, nn.Module], combiner: nn.Module):
        super().__init__()
        self.model = model
        self.losses = nn.ModuleDict(losses)
        self.combiner = combiner

    def forward(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        out = self.model(batch)
        terms: dict[str, torch.Tensor] = {}
        # the model's own wiring of its outputs to its terms (JointModel.loss_inputs)
        loss_inputs = cast(LossInputs, self.model.loss_inputs)
        for term, calls in loss_inputs(out, batch).items():
            loss = self.losses[term]
            # a loss that reads the batch's labels (a recognition-guided SR loss) says so
            extra = {"labels": batch["label"]} if getattr(loss, "needs_labels", False) else {}
            values = [loss(*args, **extra) for args in calls]
            keys: list[str] | None = getattr(loss, "terms", None)
            if keys is None:
                terms[term] = sum(values)
            else:
                for key, name in zip(keys, term_names(term, loss)):
                    terms[name] = sum(v[key] for v in values)
        total, logs = self.combiner(terms)
        return total, terms, logs
