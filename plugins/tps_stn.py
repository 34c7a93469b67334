"""The TPS spatial transformer and its STN head, as TextZoom's TSRN has them (official
``recognizer/stn_head.py`` and ``recognizer/tps_spatial_transformer.py``; their module and buffer
names are the checkpoints' keys). TSRN aligns its LR input with them; TBSRN, TPGSR and TATT
use the same pieces with an STN head reading the LR image itself (``LRSTNHead``).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

# Official TextZoom constants: the STN reads the LR image resized to 32x64 and the TPS
# writes the LR size (height // scale, width // scale = 16x64) from 20 control points.
STN_INPUT_SIZE = (32, 64)
TPS_OUTPUT_SIZE = (16, 64)
NUM_CONTROL_POINTS = 20
TPS_MARGINS = (0.05, 0.05)
STN_INIT_MARGIN = 0.01


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def _control_points(margin_x: float, margin_y: float) -> torch.Tensor:
    """Control points on the top then bottom edge, x evenly spaced; (20, 2) as (x, y) in [0, 1]."""
    per_side = NUM_CONTROL_POINTS // 2
    xs = torch.linspace(margin_x, 1.0 - margin_x, per_side, dtype=torch.float64)
    top = torch.stack([xs, torch.full_like(xs, margin_y)], 1)
    bottom = torch.stack([xs, torch.full_like(xs, 1.0 - margin_y)], 1)
    return torch.cat([top, bottom], 0)


class STNHead(nn.Module):
    """Predicts the 20 TPS control points from the (32x64) input; starts at the identity."""

    def __init__(self, in_channels: int):
        super().__init__()
        widths = [32, 64, 128, 256, 256, 256]
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            layers.append(_conv_bn_relu(in_channels if i == 0 else widths[i - 1], w))
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2, 2))
        self.stn_convnet = nn.Sequential(*layers)  # 32x64 -> 1x2
        self.stn_fc1 = nn.Sequential(
            nn.Linear(2 * 256, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True)
        )
        self.stn_fc2 = nn.Linear(512, NUM_CONTROL_POINTS * 2)
        self._init()

    def _init(self) -> None:
        # As the official STNHead.init_weights / init_stn: fc2 outputs the margin-0.01
        # control points whatever the features, so the transform starts near identity.
        for m in itertools.chain(self.stn_convnet.modules(), self.stn_fc1.modules()):
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.001)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.stn_fc2.weight)
        with torch.no_grad():
            self.stn_fc2.bias.copy_(_control_points(STN_INIT_MARGIN, STN_INIT_MARGIN).flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.stn_fc1(self.stn_convnet(x).flatten(1))
        return self.stn_fc2(0.1 * feat).view(-1, NUM_CONTROL_POINTS, 2)


class LRSTNHead(STNHead):
    """TextZoom's STN head (same keys and shapes) reading the 16x64 LR image itself, not one
    resized to 32x64, so its fifth pooling halves the width only (TBSRN, TPGSR, TATT)."""

    def __init__(self, in_channels: int):
        super().__init__(in_channels)
        self.stn_convnet[9] = nn.MaxPool2d(kernel_size=(1, 2), stride=(1, 2))


def _tps_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """phi(r) = r^2 log r = 0.5 d log d with d the squared distance (0 at d = 0)."""
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return torch.where(d > 0, 0.5 * d * torch.log(d.clamp_min(1e-300)), torch.zeros_like(d))


class TPSSpatialTransformer(nn.Module):
    """Thin-plate-spline warp from predicted source control points to a fixed output grid.

    Buffers (``inverse_kernel``, ``padding_matrix``, ``target_coordinate_repr``,
    ``target_control_points``) carry the official names, as they are in its checkpoints.
    """

    def __init__(self, output_size: tuple[int, int] = TPS_OUTPUT_SIZE):
        super().__init__()
        self.height, self.width = output_size
        n = NUM_CONTROL_POINTS
        target = _control_points(*TPS_MARGINS)
        kernel = torch.zeros(n + 3, n + 3, dtype=torch.float64)
        kernel[:n, :n] = _tps_kernel(target, target)
        kernel[:n, -3] = 1
        kernel[-3, :n] = 1
        kernel[:n, -2:] = target
        kernel[-2:, :n] = target.T
        ys, xs = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float64) / (self.height - 1),
            torch.arange(self.width, dtype=torch.float64) / (self.width - 1),
            indexing="ij",
        )
        coords = torch.stack([xs.flatten(), ys.flatten()], 1)  # (H*W, 2) as (x, y), row-major
        coord_repr = torch.cat(
            [_tps_kernel(coords, target), torch.ones(len(coords), 1, dtype=torch.float64), coords],
            1,
        )
        self.register_buffer("inverse_kernel", torch.linalg.inv(kernel).float())
        self.register_buffer("padding_matrix", torch.zeros(3, 2))
        self.register_buffer("target_coordinate_repr", coord_repr.float())
        self.register_buffer("target_control_points", target.float())

    def forward(self, x: torch.Tensor, source_points: torch.Tensor) -> torch.Tensor:
        b = source_points.shape[0]
        y = torch.cat([source_points, self.padding_matrix.expand(b, 3, 2)], 1)
        source = self.target_coordinate_repr @ (self.inverse_kernel @ y)  # (B, H*W, 2)
        grid = source.view(b, self.height, self.width, 2).clamp(0, 1) * 2 - 1
        # align_corners=True: the behaviour of grid_sample in torch <= 1.2, which the
        # official code was written against (it passes no align_corners).
        return F.grid_sample(x, grid, align_corners=True)
