"""Small random rotations of image batches, TATT's training augmentation: the text-prior
backbones (tsrx_builtin.text_prior) offer it as their ``random_rotation`` and ``rotate``,
which the joint model uses for ``model.rotate_train`` (docs/models.md).

TATT (Ma et al., CVPR 2022; github.com/mjq11302010044/TATT ``interfaces/super_resolution.py``
``torch_rotate_img``) rotates each training pair by its own angle through an affine grid
whose off-diagonal terms are scaled by the image's aspect ratio H/W, jittered per sample
by ``(offset * 2 - 1) * off_range``; bilinear sampling, zeros outside, ``align_corners=False``
(the default of the torch versions it ran on, where it passes none).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_rotation(
    batch: int, max_degrees: float, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles in radians, uniform in [-max, max] degrees, and aspect offsets uniform in [0, 1)."""
    degrees = (torch.rand(batch) * 2 - 1) * max_degrees
    return (degrees * (math.pi / 180)).to(device), torch.rand(batch).to(device)


def rotate(
    images: torch.Tensor, angles: torch.Tensor, offsets: torch.Tensor, off_range: float = 0.2
) -> torch.Tensor:
    """``images`` (N, C, H, W) each rotated by ``angles[n]`` (radians) about the centre."""
    n, _, h, w = images.shape
    ratio = h / float(w) + offsets.to(images) * off_range * 2 - off_range
    cos, sin = torch.cos(angles).to(images), torch.sin(angles).to(images)
    zero = torch.zeros_like(cos)
    theta = torch.stack([cos, sin * ratio, zero, -sin / ratio, cos, zero], 1).view(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)
