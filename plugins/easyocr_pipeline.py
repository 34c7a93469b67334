"""EasyOCR's input arithmetic on 8-bit crops, in torch, for the ``easyocr`` judge.

EasyOCR 1.7.2 reads a crop given as an 8-bit BGR array (``Reader.recognize`` with no boxes:
the whole image is one box) in these steps, each reproduced here to the bit on integers:

1. grey: OpenCV's ``COLOR_BGR2GRAY`` on 8 bits, ``(9798 R + 19235 G + 3735 B + 2^14) >> 15``
   (0.299 / 0.587 / 0.114 in 15-bit fixed point);
2. height 64, aspect ratio kept: ``cv2.resize`` to ``(int(64 W / H), 64)`` with
   ``INTER_LINEAR`` (EasyOCR passes ``Image.LANCZOS``, whose value 1 is OpenCV's linear).
   OpenCV's 8-bit linear resize: source positions ``(d + 0.5) * scale - 0.5`` in float32,
   11-bit weights each rounded on its own, a horizontal pass in integers, then a vertical
   pass that shifts each weighted row by 4 and by 16 before adding 2 and shifting by 2;
   horizontally, positions outside the image take the edge pixel with weight 0, vertically
   the rows are clamped but keep their fractional weights (which is what makes the border
   rows round differently). Measured bit-exact against ``cv2.resize`` (OpenCV 5.1) on random
   images of 20 sizes (tests/fixtures/easyocr/record_easyocr.py ``--check-arithmetic``);
3. where the first reading's confidence is below 0.1 (``contrast_ths``), a second reading of
   the crop with its contrast stretched (``adjust_contrast = 0.5``): with ``high`` / ``low``
   the 90th / 10th percentiles (linear interpolation), when ``(high - low) / max(10,
   high + low) < 0.5`` the pixels become ``(x - low + 25) * 200 / max(10, high - low)``,
   clipped to [0, 255] and truncated to integers; the more confident reading is kept
   (the second on a tie);
4. values ``(x / 255 - 0.5) / 0.5``, the image right-padded to ``64 * ceil(W / H)`` columns
   by repeating its last column.

Crops taller than wide are first resized to 64 columns, then (EasyOCR's ``AlignCollate``)
to height 64 by Pillow's bicubic ``Image.resize`` (for wider crops that second resize keeps
the size, so Pillow returns the image unchanged): Pillow's 8-bit arithmetic (a = -0.5,
support scaled by the reduction, weights normalised then in 22-bit fixed point, a rounded
horizontal pass, then the vertical one) is reproduced here too.
"""

from __future__ import annotations

import math

import torch

HEIGHT = 64
CONTRAST_THRESHOLD = 0.1  # EasyOCR's contrast_ths
CONTRAST_TARGET = 0.5  # EasyOCR's adjust_contrast
_GREY_15BIT = (9798, 19235, 3735)  # round(0.299 / 0.587 / 0.114 * 2^15), summing to 2^15
_WEIGHT_BITS = 11


def to_8bit(images: torch.Tensor) -> torch.Tensor:
    """RGB (B, C>=3, H, W) in [0, 1] -> int64 (B, 3, H, W) in [0, 255], as a PNG would hold."""
    return torch.round(images[:, :3].detach().float().clamp(0, 1) * 255).long()


def grey_8bit(rgb: torch.Tensor) -> torch.Tensor:
    """OpenCV's 8-bit BGR2GRAY of int64 RGB (B, 3, H, W) -> (B, H, W)."""
    r, g, b = rgb.unbind(1)
    wr, wg, wb = _GREY_15BIT
    return (wr * r + wg * g + wb * b + (1 << 14)) >> 15


def _taps(n_in: int, n_out: int, zero_outside: bool, device) -> tuple[torch.Tensor, ...]:
    """Source indices and 11-bit weights of OpenCV's linear resize along one axis."""
    scale = 1.0 / (n_out / n_in)
    pos = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).float()
    first = torch.floor(pos)
    frac = pos - first
    first = first.long()
    if zero_outside:
        before = first < 0
        frac[before], first[before] = 0.0, 0
        after = first >= n_in - 1
        frac[after], first[after] = 0.0, n_in - 1
    one = 1 << _WEIGHT_BITS
    w1 = torch.round(frac * one).long()
    w0 = torch.round((1.0 - frac) * one).long()
    lo, hi = first.clamp(0, n_in - 1), (first + 1).clamp(0, n_in - 1)
    return lo.to(device), hi.to(device), w0.to(device), w1.to(device)


def resize_linear_8bit(grey: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """OpenCV's ``INTER_LINEAR`` resize of int64 (B, H, W) 8-bit images to (B, height, width)."""
    x0, x1, a0, a1 = _taps(grey.shape[-1], width, True, grey.device)
    rows = grey[..., x0] * a0 + grey[..., x1] * a1  # (B, H, width), scaled by 2^11
    y0, y1, b0, b1 = _taps(grey.shape[-2], height, False, grey.device)
    top = (b0[:, None] * (rows[:, y0] >> 4)) >> 16
    bottom = (b1[:, None] * (rows[:, y1] >> 4)) >> 16
    return ((top + bottom + 2) >> 2).clamp(0, 255)


def _bicubic_weight(x: float) -> float:
    a = -0.5  # Pillow's bicubic
    x = abs(x)
    if x < 1:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _pil_taps(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's bicubic weights (n_out, n_in) for 8-bit images, in 22-bit fixed point."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inverse = 1.0 / filterscale
    taps = torch.zeros(n_out, n_in, dtype=torch.int64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = [_bicubic_weight((x - center + 0.5) * inverse) for x in range(lo, hi)]
        total = 0.0
        for v in w:
            total += v
        for x, v in zip(range(lo, hi), w):
            v = v / total if total != 0.0 else v
            fixed = v * (1 << 22)
            taps[i, x] = int(fixed - 0.5) if fixed < 0 else int(fixed + 0.5)
    return taps


def _pil_pass(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    # along the last axis; each pass rounds to 8 bits, as Pillow's does
    acc = x @ taps.T.to(x.device)
    return ((acc + (1 << 21)) >> 22).clamp(0, 255)


def _bicubic_8bit(grey: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pillow's ``Image.resize(BICUBIC)`` of int64 (B, H, W) 8-bit images: horizontal
    pass, then vertical, both in 22-bit fixed point with rounding."""
    x = _pil_pass(grey, _pil_taps(grey.shape[-1], width))
    return _pil_pass(x.transpose(-1, -2), _pil_taps(grey.shape[-2], height)).transpose(-1, -2)


def _percentile(flat: torch.Tensor, q: float, counts: torch.Tensor | None = None) -> torch.Tensor:
    """numpy's ``percentile`` (method ``linear``) per row of a float64 (B, N) tensor.

    ``counts`` (B, 256): how often each 8-bit value occurs in each row, where the rows hold
    only such values: the order statistics are then read off the cumulative counts, the same
    values a sort gives (a sort of 64 x 256 values per crop cost more than the crop's second
    reading's convolutions, docs/performance.md)."""
    n = flat.shape[1]
    index = (n - 1) * q
    below = math.floor(index)
    gamma = index - below
    if counts is None:
        ordered = flat.sort(dim=1).values
        a, b = ordered[:, below], ordered[:, min(below + 1, n - 1)]
    else:
        cumulative = counts.cumsum(1)
        ranks = torch.tensor([below + 1, min(below + 2, n)], dtype=cumulative.dtype)
        a, b = torch.searchsorted(cumulative, ranks.repeat(len(flat), 1)).double().unbind(1)
    # numpy's _lerp: from the nearer end, so that the result never overshoots b
    return a + (b - a) * gamma if gamma < 0.5 else b - (b - a) * (1 - gamma)


def _value_counts(grey: torch.Tensor) -> torch.Tensor | None:
    """Per row of int64 (B, N) 8-bit values, how often each of 0..255 occurs (None where a
    value lies outside: the percentiles then sort)."""
    if grey.dtype != torch.int64 or grey.numel() == 0 or grey.min() < 0 or grey.max() > 255:
        return None
    counts = torch.zeros(grey.shape[0], 256, dtype=torch.int64, device=grey.device)
    return counts.scatter_add_(1, grey, torch.ones_like(grey))


def resize_to_height(grey: torch.Tensor) -> tuple[torch.Tensor, int]:
    """EasyOCR's first resize (OpenCV) of int64 (B, H, W) crops and the padded width:
    height 64, or for a crop taller than wide, 64 columns (see ``fit_height``)."""
    h, w = grey.shape[-2:]
    ratio = w / h if w >= h else h / w
    size = (HEIGHT, int(HEIGHT * ratio)) if w >= h else (int(HEIGHT * ratio), HEIGHT)
    return resize_linear_8bit(grey, *size), HEIGHT * math.ceil(ratio)


def fit_height(grey: torch.Tensor, width: int) -> torch.Tensor:
    """EasyOCR's second resize (Pillow's bicubic, in ``AlignCollate``) to height 64, the
    width ``ceil(64 x aspect ratio)`` at most ``width``; a no-op for crops wider than tall."""
    h, w = grey.shape[-2:]
    if h == HEIGHT:
        return grey  # Pillow returns the image unchanged when the size is the same
    return _bicubic_8bit(grey, HEIGHT, min(math.ceil(HEIGHT * w / h), width))


def stretch_contrast(grey: torch.Tensor) -> torch.Tensor:
    """EasyOCR's ``adjust_contrast_grey`` (target 0.5) of int64 (B, H, W) images, per image."""
    flat = grey.flatten(1).double()
    counts = _value_counts(grey.flatten(1))
    high, low = _percentile(flat, 0.9, counts), _percentile(flat, 0.1, counts)
    contrast = (high - low) / torch.clamp(high + low, min=10)
    # a tensor numerator: ``200.0 / tensor`` multiplies by a reciprocal, one ulp off numpy
    gain = torch.full_like(high, 200.0) / torch.clamp(high - low, min=10)
    stretched = ((flat - low[:, None] + 25) * gain[:, None]).clamp(0, 255).floor().long()
    low_contrast = (contrast < CONTRAST_TARGET)[:, None]
    return torch.where(low_contrast, stretched, grey.flatten(1)).view_as(grey)


def normalize_and_pad(grey: torch.Tensor, width: int) -> torch.Tensor:
    """int64 (B, 64, W') -> float (B, 1, 64, width) in [-1, 1], last column repeated."""
    x = (grey.float() / 255 - 0.5) / 0.5
    if x.shape[-1] < width:
        x = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], width - x.shape[-1])], dim=-1)
    return x[:, None]
