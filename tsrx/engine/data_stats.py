"""How hard a data set is before any model: bicubic-upscaled LR against HR.

Scored exactly as ``tsrx eval`` scores its bicubic baseline (so the figures compare): the
``textzoom`` protocol of ``tsrx.engine.metrics`` (one PSNR and one SSIM per batch of 50 in
data set order, then the mean over batches; RGB only; no clamping; see docs/metrics.md),
LR 16x64 upscaled x2 with torch's bicubic, ``align_corners=False`` (the ``bicubic`` plugin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tsrx.engine.config import EvalSection

if TYPE_CHECKING:
    from torch.utils.data import Dataset


def bicubic_baseline(
    dataset: Dataset[dict[str, Any]], batch_size: int = EvalSection.batch_size
) -> dict[str, float]:
    """{"n", "psnr", "ssim"} of bicubic LR vs HR over the whole data set."""
    import torch
    import torch.nn.functional as F

    from tsrx.data.loader import build_loader
    from tsrx.engine.metrics import psnr_batch, ssim_batch

    psnrs, ssims, n = [], [], 0
    with torch.no_grad():
        for batch in build_loader(dataset, batch_size, sampler=None, num_workers=0):
            lr, hr = batch["lr"][:, :3], batch["hr"][:, :3]
            sr = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False)
            psnrs.append(float(psnr_batch(sr, hr)))
            ssims.append(float(ssim_batch(sr, hr)))
            n += len(batch["label"])
    nan = float("nan")
    return {
        "n": n,
        "psnr": sum(psnrs) / len(psnrs) if psnrs else nan,
        "ssim": sum(ssims) / len(ssims) if ssims else nan,
    }
