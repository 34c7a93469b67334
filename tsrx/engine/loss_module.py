"""How one batch becomes the training loss: the model's outputs, each task's loss, the combiner.

``LossModule`` holds model, losses and combiner in one module, so the combiner's learned
weights (``uncertainty``) sit inside what DDP wraps and are averaged like the model's
gradients. Which outputs each task reads (a cascade's stages, TATT's rotated pair, an
attention recognizer's own loss) is decided here, not in the training step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tsrx.models.text import encode_labels


class LossModule(nn.Module):
    """model -> task losses -> combiner: the unit DDP wraps."""

    def __init__(self, model: nn.Module, losses: dict[str, nn.Module], combiner: nn.Module):
        super().__init__()
        self.model = model
        self.losses = nn.ModuleDict(losses)
        self.combiner = combiner
        rec = getattr(model, "recognizer", None)
        self.alphabet = rec.alphabet if rec is not None else ""
        # a lower-case alphabet (CRNN's 0-9a-z) reads upper-case labels as lower-case
        self.lower_labels = self.alphabet == self.alphabet.lower()

    def forward(
        self, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        out = self.model(batch)
        terms: dict[str, torch.Tensor] = {}
        hr = out.get("target_hr", batch.get("hr"))  # the model may augment the pair (TATT)
        if "sr" in self.losses:  # a cascade (text-prior stages) sums the loss of every stage
            sr_loss = self.losses["sr"]
            # a recognition-guided SR loss (needs_labels) also reads the batch's labels
            extra = {"labels": batch["label"]} if getattr(sr_loss, "needs_labels", False) else {}
            terms["sr"] = sum(
                sr_loss(sr, hr, **extra) for sr in out.get("sr_stages") or [out["sr"]]
            )
        if "recognition" in self.losses and getattr(self.losses["recognition"], "own", False):
            terms["recognition"] = self.losses["recognition"](out["rec_loss"])
        elif "recognition" in self.losses:
            targets, lengths = encode_labels(batch["label"], self.alphabet, lower=self.lower_labels)
            terms["recognition"] = self.losses["recognition"](out["logits"], targets, lengths)
        if "prior" in self.losses:  # each stage's LR prior against the teacher's HR prior
            terms["prior"] = sum(self.losses["prior"](p, out["prior_hr"]) for p in out["prior"])
        if "consistency" in self.losses:  # SR of a transformed LR, transformed back, vs SR
            terms["consistency"] = sum(
                self.losses["consistency"](t, sr, hr)
                for t, sr in zip(out["sr_transformed"], out.get("sr_stages") or [out["sr"]])
            )
        total, logs = self.combiner(terms)
        return total, terms, logs
