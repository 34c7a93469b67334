"""The text-prior family's training terms besides the SR loss.

- ``PRIOR_LOSSES`` (``[loss] prior``): the generator's prior on the LR image against the
  frozen one on HR, ``forward(prior_lr, prior_hr) -> scalar``, class probabilities (T, B, K).
- ``CONSISTENCY_LOSSES`` (``[loss] consistency``): TATT's TSC term, ``forward(sr_transformed,
  sr, hr) -> scalar``, with the SR image of the counter-rotated LR image rotated back.
The joint model gives these in training (``coupling = "text_prior"``, tsrx/models/joint.py);
the trainer sums each over the stages of a cascade.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.registry import CONSISTENCY_LOSSES, PRIOR_LOSSES

EPS = 1e-20  # the official code's guard inside the log and on the target


@PRIOR_LOSSES.register("tpgsr")
class TPGSRPriorLoss(nn.Module):
    """TPGSR's text-prior loss (Ma et al., TIP 2023, the TP loss of its Sec. III):
    ``L_TP = scale * (l1_weight * mean|t_HR - t_LR| + kl_weight * KL(t_HR || t_LR))``.

    As the official code (``loss/semantic_loss.py`` ``SemanticLoss``, called as
    ``sem_loss(label_vecs, label_vecs_hr) * 100`` in ``interfaces/super_resolution.py``;
    TATT uses the same): the L1 term is the mean over every element, the KL term is
    ``KLDivLoss()(log(t_LR + 1e-20), t_HR + 1e-20)`` with its default element-wise mean,
    both weighted 1, and the sum scaled by 100.
    """

    def __init__(self, l1_weight: float = 1.0, kl_weight: float = 1.0, scale: float = 100.0):
        super().__init__()
        self.l1_weight, self.kl_weight, self.scale = l1_weight, kl_weight, scale

    def forward(self, prior_lr: torch.Tensor, prior_hr: torch.Tensor) -> torch.Tensor:
        prior_lr, prior_hr = prior_lr.float(), prior_hr.float()
        l1 = (prior_hr - prior_lr).abs().mean()
        target = prior_hr + EPS
        kl = (target * (target.log() - (prior_lr + EPS).log())).mean()
        return self.scale * (self.l1_weight * l1 + self.kl_weight * kl)


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = (g / g.sum()).float()
    return (g[:, None] @ g[None, :]).expand(channels, 1, size, size).contiguous()


def tri_ssim(
    a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """TATT's three-image SSIM (``utils/ssim_psnr.py`` ``_tri_ssim``): SSIM's form with the
    pairwise means and covariances of three images summed, Gaussian 11x11 window, sigma 1.5,
    C1 = 0.01^2, C2 = 0.03^2, every channel; the mean over every pixel and channel."""
    channels = a.shape[1]
    window = _gaussian_window(window_size, sigma, channels).to(a)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=window_size // 2, groups=channels)

    mu = [blur(x) for x in (a, b, c)]
    var = [blur(x * x) - m * m for x, m in zip((a, b, c), mu)]
    pairs = ((0, 1), (1, 2), (2, 0))
    cov = [blur((a, b, c)[i] * (a, b, c)[j]) - mu[i] * mu[j] for i, j in pairs]
    mean_term = sum(mu[i] * mu[j] for i, j in pairs) + 0.01**2
    var_term = sum(cov) + 0.03**2
    norm = (sum(m * m for m in mu) + 0.01**2) * (sum(var) + 0.03**2)
    return (mean_term * var_term / norm).mean()


@CONSISTENCY_LOSSES.register("tsc")
class TextStructureConsistencyLoss(nn.Module):
    """TATT's text structure consistency loss (Ma et al., CVPR 2022, Sec. 3.3, L_TSC):
    ``scale * (1 - TriSSIM(R(SR(R^-1(x))), SR(x), HR))``, R a small rotation.

    As the official training (``--tssim_loss``, ``interfaces/super_resolution.py``):
    ``(1 - tri_ssim(sr_of_rotated_back, sr, hr).mean()) * 10``, every channel.
    """

    def __init__(self, scale: float = 10.0):
        super().__init__()
        self.scale = scale

    def forward(
        self, sr_transformed: torch.Tensor, sr: torch.Tensor, hr: torch.Tensor
    ) -> torch.Tensor:
        return self.scale * (1 - tri_ssim(sr_transformed.float(), sr.float(), hr.float()))
