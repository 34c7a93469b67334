"""How hard a data set is before any model: bicubic-upscaled LR against HR.

Conventions (stated because PSNR/SSIM figures are meaningless without them): RGB in [0, 1]
after TextZoom's preprocessing (HR 32x128, LR 16x64); LR upscaled x2 with torch's bicubic
(``align_corners=False``) and clamped to [0, 1]; PSNR per image with peak 1, averaged over
images; SSIM per image with scikit-image (Gaussian window sigma 1.5, population covariance,
as in Wang et al. 2004), channels averaged, then averaged over images.
"""

from __future__ import annotations

import numpy as np


def bicubic_baseline(dataset, limit: int | None = None) -> dict:
    """{"n", "psnr", "ssim"} of bicubic LR vs HR over the first ``limit`` items (all by default)."""
    import torch
    import torch.nn.functional as F
    from skimage.metrics import structural_similarity

    from tsrx.data.transforms import to_float

    n = len(dataset) if limit is None else min(limit, len(dataset))
    psnrs, ssims = [], []
    for i in range(n):
        item = dataset[i]
        lr = to_float(item["lr"][:3])[None]
        hr = to_float(item["hr"][:3])[None]
        sr = F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        mse = torch.mean((sr - hr) ** 2).item()
        psnrs.append(10 * np.log10(1.0 / max(mse, 1e-10)))
        a = sr[0].permute(1, 2, 0).numpy()
        b = hr[0].permute(1, 2, 0).numpy()
        ssims.append(structural_similarity(a, b, channel_axis=2, data_range=1.0,
                                           gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False))
    return {"n": n, "psnr": float(np.mean(psnrs)) if n else float("nan"),
            "ssim": float(np.mean(ssims)) if n else float("nan")}
