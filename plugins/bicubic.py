"""The bicubic baseline: x2 interpolation, no parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.errors import TsrxError
from tsrx.registry import SR_BACKBONES


@SR_BACKBONES.register("bicubic")
class Bicubic(nn.Module):
    """(B, C, h, w) -> (B, C, 2h, 2w) by bicubic interpolation; the mask channel, when
    present, is interpolated like the others so SR and HR keep the same channel count.

    ``align_corners``: False by default (tsrx's convention); the official TextZoom
    ``BICUBIC`` baseline (src/model/bicubic.py) passes True, set it to reproduce that code.
    """

    def __init__(self, mask: bool = True, scale: int = 2, align_corners: bool = False):
        super().__init__()
        self.in_channels = 4 if mask else 3
        self.scale = scale
        self.align_corners = align_corners

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.shape[1] != self.in_channels:
            raise TsrxError(
                f"bicubic: expected {self.in_channels}-channel input (mask = "
                f"{self.in_channels == 4}), got {lr.shape[1]} channels"
            )
        size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        return F.interpolate(lr, size, mode="bicubic", align_corners=self.align_corners)
