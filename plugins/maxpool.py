"""``nn.MaxPool2d`` that, on the CPU without autograd, takes the maximum of the window's
strided views instead of calling torch's pooling kernel.

Why: on this project's CPU, torch's ``max_pool2d`` ran 1.3-75x slower than the same maximum
over strided views (EasyOCR's VGG pools at batch 128: 190 vs 86 ms bf16 and 190 vs 144 ms
float32 for the 32-channel 64x256 map; 61 vs 0.8 ms bf16 for a (2, 1) pool of 256
channels), a third of an EasyOCR reading's time in bf16 (docs/performance.md, "Max pooling").
A maximum is exact, and NaN propagates as in ``max_pool2d``: the values are the same bit for
bit, so judges read exactly as before. With autograd torch's own runs: its backward sends a
tie's gradient to one input, ``torch.maximum``'s splits it. Padding (CRNN's (2, 2) pools
with stride (2, 1) and padding (0, 1): 5.0 vs 0.4 ms at batch 50) is ``-inf`` around a
floating-point input, which ``max_pool2d``'s implicit padding is too. Dilation, ``ceil_mode``,
``return_indices`` or an integer input: torch's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def strided_max(
    x: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """``F.max_pool2d(x, kernel, stride, padding)`` (floor mode) as a maximum of views."""
    # the layout max_pool2d gives: channels_last for a channels_last input, else contiguous
    layout = (
        torch.channels_last
        if x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    if padding != (0, 0):
        ph, pw = padding
        x = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
    (kh, kw), (sh, sw) = kernel, stride
    h_out, w_out = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    views = [
        x[..., i : i + (h_out - 1) * sh + 1 : sh, j : j + (w_out - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    out = views[0].clone(memory_format=layout)
    for view in views[1:]:
        torch.maximum(out, view, out=out)
    return out


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (no parameters: the modules' state_dict keys are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = _pair(self.kernel_size)
        stride = _pair(self.stride)  # nn.MaxPool2d set it to the kernel where none was given
        padding = _pair(self.padding)
        plain = (
            _pair(self.dilation) == (1, 1)
            and not self.ceil_mode
            and not self.return_indices
            and (padding == (0, 0) or x.is_floating_point())
            # torch refuses more than half a window of padding: its error, then
            and all(p <= k // 2 for p, k in zip(padding, kernel))
        )
        if (
            not plain
            or x.device.type != "cpu"
            or x.dim() not in (3, 4)
            or x.shape[-2] + 2 * padding[0] < kernel[0]
            or x.shape[-1] + 2 * padding[1] < kernel[1]
            or (torch.is_grad_enabled() and x.requires_grad)
        ):
            return super().forward(x)
        return strided_max(x, kernel, stride, padding)
