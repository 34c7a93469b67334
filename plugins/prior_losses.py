"""Text-prior losses: the generator's prior on the LR image against the frozen one on HR.

Registered in ``PRIOR_LOSSES`` (``[loss] prior = {type = ...}``); ``forward(prior_lr,
prior_hr) -> scalar`` with class probabilities (T, B, K). The joint model gives them in
training (``coupling = "text_prior"``, tsrx/models/joint.py); the trainer sums the loss over
the stages of a cascade.
"""

from __future__ import annotations

import torch
from torch import nn

from tsrx.registry import PRIOR_LOSSES

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
