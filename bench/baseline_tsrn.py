"""The eager TSRN a user would otherwise run: the reference pipeline's structure, written anew.

Why it exists: every speed figure in ``bench/`` is tsrx against this module, measured in the
same process. It follows the structure of the official TextZoom code (JasonBoy1/TextZoom:
``src/model/tsrn.py``, ``src/model/recognizer/stn_head.py`` and
``tps_spatial_transformer.py``, ``src/loss/image_loss.py``; read for facts, not copied),
including its costs: 1x1 conv in NCHW, then ``permute(0, 2, 3, 1).contiguous()`` and a
``batch_first`` GRU per recurrent block, ``transpose(-1, -2)`` around the column GRU, mish as
``x * tanh(softplus(x))``, the gradient-prior loss from four padded shifted copies.

Same math and the same state_dict keys as ``tsrx_builtin.tsrn.TSRN``, so loaded with the same
weights both give the same loss to float tolerance (``tests/test_bench.py`` checks it).
One deliberate difference from the official file: ``grid_sample`` gets ``align_corners=True``,
the behaviour of the torch versions the official code was written against (it passes none),
which is also what tsrx does.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(F.softplus(x))


class GruBlock(nn.Module):
    """1x1 conv, NHWC copy, batch_first bidirectional GRU along the last image axis."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, padding=0)
        self.gru = nn.GRU(channels, channels // 2, bidirectional=True, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.permute(0, 2, 3, 1).contiguous()
        b, h, w, c = x.size()
        x, _ = self.gru(x.view(b * h, w, c))
        return x.view(b, h, w, c).permute(0, 3, 1, 2)


class RecurrentResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = GruBlock(channels)
        self.prelu = Mish()
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = GruBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(x)
        residual = self.bn1(residual)
        residual = self.prelu(residual)
        residual = self.conv2(residual)
        residual = self.bn2(residual)
        # the column GRU: swap H and W so the GRU block's last axis is the image height
        residual = self.gru1(residual.transpose(-1, -2)).transpose(-1, -2)
        return self.gru2(x + residual)


class UpsampleBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, kernel_size=3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.prelu = Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


def _conv3x3_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class STNHead(nn.Module):
    """Six conv blocks with five 2x2 max-pools (32x64 -> 1x2), two linear layers, 20 points."""

    def __init__(self, in_channels: int, num_points: int = 20):
        super().__init__()
        self.num_points = num_points
        self.stn_convnet = nn.Sequential(
            _conv3x3_block(in_channels, 32),
            nn.MaxPool2d(2, 2),
            _conv3x3_block(32, 64),
            nn.MaxPool2d(2, 2),
            _conv3x3_block(64, 128),
            nn.MaxPool2d(2, 2),
            _conv3x3_block(128, 256),
            nn.MaxPool2d(2, 2),
            _conv3x3_block(256, 256),
            nn.MaxPool2d(2, 2),
            _conv3x3_block(256, 256),
        )
        self.stn_fc1 = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True)
        )
        self.stn_fc2 = nn.Linear(512, num_points * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stn_convnet(x)
        x = x.view(x.size(0), -1)
        return self.stn_fc2(0.1 * self.stn_fc1(x)).view(-1, self.num_points, 2)


def _partial_repr(points: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    diff = points.view(-1, 1, 2) - control.view(1, -1, 2)
    dist = diff[:, :, 0] ** 2 + diff[:, :, 1] ** 2
    out = 0.5 * dist * torch.log(dist)
    return out.masked_fill(out != out, 0)  # 0 * log 0 is nan: the kernel is 0 there


def _edge_points(n: int, mx: float, my: float) -> torch.Tensor:
    xs = torch.linspace(mx, 1 - mx, n // 2)
    top = torch.stack([xs, torch.full_like(xs, my)], 1)
    return torch.cat([top, torch.stack([xs, torch.full_like(xs, 1 - my)], 1)], 0)


class TPSSpatialTransformer(nn.Module):
    def __init__(
        self,
        output_size: tuple[int, int] = (16, 64),
        num_points: int = 20,
        margins: tuple[float, float] = (0.05, 0.05),
    ):
        super().__init__()
        self.height, self.width = output_size
        target = _edge_points(num_points, *margins)
        n = num_points
        kernel = torch.zeros(n + 3, n + 3)
        kernel[:n, :n] = _partial_repr(target, target)
        kernel[:n, -3] = 1
        kernel[-3, :n] = 1
        kernel[:n, -2:] = target
        kernel[-2:, :n] = target.t()
        yx = torch.tensor(
            list(itertools.product(range(self.height), range(self.width))), dtype=torch.float32
        )
        coords = torch.stack([yx[:, 1] / (self.width - 1), yx[:, 0] / (self.height - 1)], 1)
        repr_ = torch.cat([_partial_repr(coords, target), torch.ones(len(coords), 1), coords], 1)
        self.register_buffer("inverse_kernel", torch.inverse(kernel))
        self.register_buffer("padding_matrix", torch.zeros(3, 2))
        self.register_buffer("target_coordinate_repr", repr_)
        self.register_buffer("target_control_points", target)

    def forward(self, x: torch.Tensor, source_points: torch.Tensor) -> torch.Tensor:
        b = source_points.size(0)
        y = torch.cat([source_points, self.padding_matrix.expand(b, 3, 2)], 1)
        mapping = torch.matmul(self.inverse_kernel, y)
        source = torch.matmul(self.target_coordinate_repr, mapping)
        grid = torch.clamp(source.view(-1, self.height, self.width, 2), 0, 1)
        return F.grid_sample(x, 2.0 * grid - 1.0, align_corners=True)


class BaselineTSRN(nn.Module):
    """The reference TSRN x2: block1, ``blocks`` recurrent residual blocks, conv+BN, upsample."""

    def __init__(
        self, blocks: int = 5, hidden_units: int = 32, mask: bool = True, stn: bool = True
    ):
        super().__init__()
        planes = 4 if mask else 3
        channels = 2 * hidden_units
        self.blocks = blocks
        self.stn = stn
        self.block1 = nn.Sequential(
            nn.Conv2d(planes, channels, kernel_size=9, padding=4), nn.PReLU()
        )
        for i in range(blocks):
            setattr(self, f"block{i + 2}", RecurrentResidualBlock(channels))
        setattr(
            self,
            f"block{blocks + 2}",
            nn.Sequential(
                nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.BatchNorm2d(channels)
            ),
        )
        setattr(
            self,
            f"block{blocks + 3}",
            nn.Sequential(
                UpsampleBlock(channels), nn.Conv2d(channels, planes, kernel_size=9, padding=4)
            ),
        )
        if stn:
            self.tps = TPSSpatialTransformer()
            self.stn_head = STNHead(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stn and self.training:
            x = F.interpolate(x, (32, 64), mode="bilinear", align_corners=True)
            x = self.tps(x, self.stn_head(x))
        out = {1: self.block1(x)}
        for i in range(self.blocks + 1):
            out[i + 2] = getattr(self, f"block{i + 2}")(out[i + 1])
        return torch.tanh(getattr(self, f"block{self.blocks + 3}")(out[1] + out[self.blocks + 2]))


class BaselineImageLoss(nn.Module):
    """``100 * (MSE + 1e-4 * gradient-prior L1)``: the reference TSRN training loss."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        mse = F.mse_loss(sr, hr)
        gpl = F.l1_loss(self._gradient_map(sr[:, :3]), self._gradient_map(hr[:, :3]))
        return (mse + 1e-4 * gpl) * 100

    @staticmethod
    def _gradient_map(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        right = F.pad(x, (0, 1, 0, 0))[:, :, :, 1:]
        left = F.pad(x, (1, 0, 0, 0))[:, :, :, :w]
        top = F.pad(x, (0, 0, 1, 0))[:, :, :h, :]
        bottom = F.pad(x, (0, 0, 0, 1))[:, :, 1:, :]
        squared = torch.pow((right - left) * 0.5, 2) + torch.pow((top - bottom) * 0.5, 2)
        return torch.pow(squared + 1e-6, 0.5)


def baseline_train_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr: torch.Tensor,
    hr: torch.Tensor,
    clip: float = 0.25,
) -> float:
    """One reference training iteration: forward, loss, zero_grad, backward, clip 0.25, Adam."""
    sr = model(lr)
    loss = loss_fn(sr, hr)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()
