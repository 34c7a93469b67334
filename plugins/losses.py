"""Task losses: SR losses between SR and HR images, and the CTC recognition loss.

SR losses take ``(sr, hr)`` of shape (B, C, H, W), C = 3 or 4 (RGB + mask), and
return a scalar. The definitions follow the TextZoom reference code
(JasonBoy1/TextZoom, ``src/loss/image_loss.py`` and ``src/interfaces/``):
MSE over every channel, the gradient-profile loss over RGB only, and the training
loss ``ImageLoss(loss_weight=[1, 1e-4])(sr, hr) * 100`` (``base.py`` builds it,
``super_resolution.py`` multiplies by 100).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.registry import REC_LOSSES, SR_LOSSES


def gradient_map(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel gradient magnitude with central differences and zero padding.

    ``sqrt(((x[j+1] - x[j-1]) / 2)^2 + ((x[i-1] - x[i+1]) / 2)^2 + eps)``, neighbours
    outside the image read as 0 (so border pixels see a step to black), as the
    reference ``GradientPriorLoss.gradient_map`` in ``image_loss.py``. ``eps`` keeps
    the square root differentiable where the gradient is exactly zero.
    """
    padded = F.pad(x, (1, 1, 1, 1))
    dx = (padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]) * 0.5
    dy = (padded[:, :, :-2, 1:-1] - padded[:, :, 2:, 1:-1]) * 0.5
    return torch.sqrt(dx * dx + dy * dy + eps)


@SR_LOSSES.register("mse")
class MSELoss(nn.Module):
    """Mean squared error over every element, mask channel included (as the reference)."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(sr, hr)


@SR_LOSSES.register("gpl")
class GradientProfileLoss(nn.Module):
    """TextZoom's gradient-prior loss: mean L1 between the RGB gradient-magnitude maps."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(gradient_map(sr[:, :3], self.eps), gradient_map(hr[:, :3], self.eps))


@SR_LOSSES.register("textzoom")
class TextZoomLoss(nn.Module):
    """The reference TSRN training loss: ``scale * (mse_weight * MSE + gpl_weight * GPL)``.

    Defaults reproduce ``100 * (MSE + 1e-4 * GPL)``.
    """

    def __init__(
        self,
        scale: float = 100.0,
        mse_weight: float = 1.0,
        gpl_weight: float = 1e-4,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.scale, self.mse_weight, self.gpl_weight = scale, mse_weight, gpl_weight
        self.mse = MSELoss()
        self.gpl = GradientProfileLoss(eps)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        loss = self.mse_weight * self.mse(sr, hr)
        if self.gpl_weight:
            loss = loss + self.gpl_weight * self.gpl(sr, hr)
        return self.scale * loss


@REC_LOSSES.register("ctc")
class CTCLoss(nn.Module):
    """CTC on raw logits (T, B, K); class 0 is the blank, every sequence uses all T steps.

    ``reduction = "batch"`` (default): the sum of per-sample negative log-likelihoods
    divided by the batch size, as meijieru's crnn.pytorch trains (``criterion(...) /
    batch_size``). ``"length"``: each sample's loss divided by its target length first,
    then the batch mean (torch's ``reduction="mean"``). ``zero_infinity`` zeroes
    impossible alignments (a label longer than T allows) instead of returning inf.
    The log-softmax runs in float32 so bf16/fp16 logits under AMP stay stable.
    """

    def __init__(self, zero_infinity: bool = True, reduction: Literal["batch", "length"] = "batch"):
        super().__init__()
        self.zero_infinity = zero_infinity
        self.reduction = reduction

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        steps, batch = logits.shape[:2]
        log_probs = logits.float().log_softmax(dim=2)
        input_lengths = torch.full((batch,), steps, dtype=torch.long)
        per_sample = F.ctc_loss(
            log_probs,
            targets.to(log_probs.device),
            input_lengths,
            target_lengths.cpu(),
            blank=0,
            reduction="none",
            zero_infinity=self.zero_infinity,
        )
        if self.reduction == "length":
            per_sample = per_sample / target_lengths.to(per_sample).clamp(min=1)
        return per_sample.sum() / batch


@REC_LOSSES.register("own")
class RecognizerOwnLoss(nn.Module):
    """The recognizer's own training objective, for attention recognizers (``ctc = False``:
    ASTER's and MORAN's teacher-forced cross-entropy). The joint model computes it
    (``recognizer.loss(images, labels)``); this passes it on as the recognition term."""

    own = True

    def __init__(self) -> None:
        super().__init__()

    def forward(self, rec_loss: torch.Tensor) -> torch.Tensor:
        return rec_loss
