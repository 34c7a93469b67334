"""The SR baselines of the TextZoom benchmark (Wang et al., ECCV 2020), as its code trains them.

Each class has the module tree, state_dict keys and forward of its file in the official
TextZoom code (github.com/WenjiaWang0312/TextZoom, ``src/model/``: ``srcnn.py``,
``vdsr.py``, ``srresnet.py``, ``edsr.py``, ``rdn.py``, ``lapsrn.py``, ``esrgan.py``), so a
checkpoint it saved (``{'state_dict_G': ..., 'info': {'arch': ...}}``) loads with no key left
over and gives the same output. Each is registered under its official ``--arch`` name.

Construction defaults are those of ``src/interfaces/base.py`` (``generator_init``) with
``src/main.py``'s defaults: x2, 16x64 -> 32x128, no mask and no STN. The official ``--STN``
branch of these models is left out: it feeds the 16x64 LR image straight into an STN head
whose five 2x2 poolings need at least 32 rows, so it cannot run on TextZoom (docs/models.md).
``mask = true`` gives a 4-channel model where the official constructor has a channel argument
(all but EDSR, whose mean shift is RGB only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tsrx.checkpoint import strip_module_prefix
from tsrx.errors import TsrxError
from tsrx.registry import SR_BACKBONES

SCALE = 2  # TextZoom: 16x64 -> 32x128


def _channels(mask: bool) -> int:
    return 4 if mask else 3


def options_from_weights(obj: Any, arch: str, first_conv: str) -> tuple[dict, dict]:
    """``mask`` read off the input conv of a TextZoom-layout checkpoint (its ``info`` does
    not record ``--mask``): 4 input channels -> mask = true. Returns (options, weights)."""
    weights = obj["state_dict_G"]
    if not isinstance(weights, Mapping):
        raise TsrxError(
            f"TextZoom-format checkpoint ({arch}): state_dict_G is a "
            f"{type(weights).__name__}, expected a state_dict"
        )
    weights = strip_module_prefix(weights)
    conv = weights.get(first_conv)
    if conv is None:
        return {}, weights  # the load report names what is missing
    if conv.dim() != 4 or conv.shape[1] not in (3, 4):
        raise TsrxError(
            f"TextZoom-format checkpoint ({arch}): {first_conv} has shape "
            f"{tuple(conv.shape)}, expected (out, 3 or 4, kh, kw): RGB, or RGB + mask"
        )
    return {"mask": conv.shape[1] == 4}, weights


def _reads_mask_from(first_conv: str):
    """A ``from_textzoom_checkpoint`` (see plugins/checkpoint_formats.py) for ``first_conv``."""

    def convert(cls, obj: Any) -> tuple[dict, dict]:
        return options_from_weights(obj, cls.__name__, first_conv)

    return classmethod(convert)


def _normal_fan_out(module: nn.Module) -> None:
    """Conv weights ~ N(0, sqrt(2 / (k*k*out))), biases zero: the official VDSR/EDSR/LapSRN init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# -- SRCNN (Dong et al., ECCV 2014) ---------------------------------------------------------
@SR_BACKBONES.register("srcnn")
class SRCNN(nn.Module):
    """Nearest x2 upsampling, then conv9x9(64) - ReLU - conv1x1(32) - ReLU - conv5x5."""

    from_textzoom_checkpoint = _reads_mask_from("conv1.weight")

    def __init__(self, mask: bool = False):
        super().__init__()
        self.in_channels = _channels(mask)
        self.conv1 = nn.Conv2d(self.in_channels, 64, kernel_size=9, padding=4)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(64, 32, kernel_size=1, padding=0)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(32, self.in_channels, kernel_size=5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=SCALE)  # mode "nearest", as the official call
        return self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


# -- VDSR (Kim et al., CVPR 2016) -----------------------------------------------------------
class ConvReLUBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


@SR_BACKBONES.register("vdsr")
class VDSR(nn.Module):
    """Nearest x2 upsampling plus a 20-layer residual (input conv, 18 conv-ReLU, output conv)."""

    from_textzoom_checkpoint = _reads_mask_from("input.weight")

    def __init__(self, mask: bool = False):
        super().__init__()
        self.in_channels = _channels(mask)
        self.residual_layer = nn.Sequential(*[ConvReLUBlock() for _ in range(18)])
        self.input = nn.Conv2d(self.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.output = nn.Conv2d(
            64, self.in_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
        self.relu = nn.ReLU(inplace=True)
        _normal_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=SCALE)
        out = self.output(self.residual_layer(self.relu(self.input(x))))
        return out + x


# -- SRResNet (Ledig et al., CVPR 2017) -----------------------------------------------------
class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.prelu = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    def __init__(self, channels: int, scale: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * scale**2, kernel_size=3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(scale)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


@SR_BACKBONES.register("srres")
class SRResNet(nn.Module):
    """conv9x9 + PReLU, five residual blocks, conv + BN, a global skip, PixelShuffle x2, tanh."""

    from_textzoom_checkpoint = _reads_mask_from("block1.0.weight")

    def __init__(self, mask: bool = False):
        super().__init__()
        self.in_channels = _channels(mask)
        self.block1 = nn.Sequential(
            nn.Conv2d(self.in_channels, 64, kernel_size=9, padding=4), nn.PReLU()
        )
        for i in range(2, 7):
            setattr(self, f"block{i}", ResidualBlock(64))
        self.block7 = nn.Sequential(nn.Conv2d(64, 64, kernel_size=3, padding=1), nn.BatchNorm2d(64))
        self.block8 = nn.Sequential(
            UpsampleBlock(64, SCALE), nn.Conv2d(64, self.in_channels, kernel_size=9, padding=4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.block1(x)
        body = head
        for i in range(2, 8):
            body = getattr(self, f"block{i}")(body)
        return torch.tanh(self.block8(head + body))


# -- EDSR (Lim et al., CVPRW 2017) ----------------------------------------------------------
EDSR_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class MeanShift(nn.Conv2d):
    """A frozen 1x1 conv (identity weight, +-RGB mean bias as built; see EDSR's init)."""

    def __init__(self, sign: float):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * torch.tensor(EDSR_RGB_MEAN))
        for p in self.parameters():
            p.requires_grad = False


class EDSRResidualBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.conv1(x))) * 0.1 + x


@SR_BACKBONES.register("edsr")
class EDSR(nn.Module):
    """256 channels, 32 residual blocks scaled by 0.1, PixelShuffle x2, mean shift in and out.

    As in the official file, the init loop that follows the mean-shift layers also matches
    them (they are convolutions): they start as random frozen 1x1 convs with zero bias, not
    as the RGB-mean shift they were built as. Kept, so training from scratch is the official one.
    """

    def __init__(self):
        super().__init__()
        self.in_channels = 3
        self.sub_mean = MeanShift(-1.0)
        self.conv_input = nn.Conv2d(3, 256, kernel_size=3, stride=1, padding=1, bias=False)
        self.residual = nn.Sequential(*[EDSRResidualBlock() for _ in range(32)])
        self.conv_mid = nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=1, bias=False)
        self.upscale = nn.Sequential(
            nn.Conv2d(256, 256 * 4, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PixelShuffle(2),
        )
        self.conv_output = nn.Conv2d(256, 3, kernel_size=3, stride=1, padding=1, bias=False)
        self.add_mean = MeanShift(1.0)
        _normal_fan_out(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_input(self.sub_mean(x))
        out = self.conv_mid(self.residual(out)) + out
        return self.add_mean(self.conv_output(self.upscale(out)))


# -- RDN (Zhang et al., CVPR 2018) ----------------------------------------------------------
class DenseLayer(nn.Module):
    """conv3x3 + ReLU whose output is concatenated to its input (official ``make_dense``)."""

    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, F.relu(self.conv(x))), 1)


class ResidualDenseBlock(nn.Module):
    def __init__(self, channels: int, layers: int, growth: int):
        super().__init__()
        self.dense_layers = nn.Sequential(
            *[DenseLayer(channels + i * growth, growth) for i in range(layers)]
        )
        self.conv_1x1 = nn.Conv2d(
            channels + layers * growth, channels, kernel_size=1, padding=0, bias=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_1x1(self.dense_layers(x)) + x


@SR_BACKBONES.register("rdn")
class RDN(nn.Module):
    """Three residual dense blocks (6 layers, growth 32, 64 features), global fusion, PixelShuffle x2."""

    from_textzoom_checkpoint = _reads_mask_from("conv1.weight")

    def __init__(self, mask: bool = False):
        super().__init__()
        self.in_channels = c = _channels(mask)
        feat, layers, growth = 64, 6, 32
        self.conv1 = nn.Conv2d(c, feat, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(feat, feat, kernel_size=3, padding=1)
        self.RDB1 = ResidualDenseBlock(feat, layers, growth)
        self.RDB2 = ResidualDenseBlock(feat, layers, growth)
        self.RDB3 = ResidualDenseBlock(feat, layers, growth)
        self.GFF_1x1 = nn.Conv2d(feat * 3, feat, kernel_size=1, padding=0)
        self.GFF_3x3 = nn.Conv2d(feat, feat, kernel_size=3, padding=1)
        self.conv_up = nn.Conv2d(feat, feat * SCALE * SCALE, kernel_size=3, padding=1)
        self.upsample = nn.PixelShuffle(
            SCALE
        )  # official sub_pixel(body=[PixelShuffle]): no weights
        self.conv3 = nn.Conv2d(feat, c, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.conv1(x)
        f1 = self.RDB1(self.conv2(shallow))
        f2 = self.RDB2(f1)
        f3 = self.RDB3(f2)
        fused = self.GFF_3x3(self.GFF_1x1(torch.cat((f1, f2, f3), 1))) + shallow
        return self.conv3(self.upsample(self.conv_up(fused)))


# -- LapSRN (Lai et al., CVPR 2017) ---------------------------------------------------------
def _bilinear_kernel(size: int) -> torch.Tensor:
    """The official ``get_upsample_filter``: a 2D bilinear upsampling kernel."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = np.ogrid[:size, :size]
    kernel = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    return torch.from_numpy(kernel).float()


class LapFeatureBlock(nn.Module):
    """Ten conv3x3 + LeakyReLU(0.2), then a x2 transposed conv + LeakyReLU (official ``_Conv_Block``)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(10):
            layers += [
                nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [
            nn.ConvTranspose2d(64, 64, kernel_size=4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        self.cov_block = nn.Sequential(*layers)  # sic: the official attribute name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cov_block(x)


@SR_BACKBONES.register("lapsrn")
class LapSRN(nn.Module):
    """The x2 level of the Laplacian pyramid: features -> residual, plus the x2 transposed-conv image.

    The official model always builds the x4 level too (``convt_I2``, ``convt_R2``,
    ``convt_F2``); at x2 it is never run, but its weights are in every checkpoint, so they
    are built here as well (and counted as parameters, as they are).
    """

    from_textzoom_checkpoint = _reads_mask_from("conv_input.weight")

    def __init__(self, mask: bool = False):
        super().__init__()
        self.in_channels = c = _channels(mask)
        self.conv_input = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.relu = nn.LeakyReLU(0.2, inplace=True)
        self.convt_I1 = nn.ConvTranspose2d(c, c, kernel_size=4, stride=2, padding=1, bias=False)
        self.convt_R1 = nn.Conv2d(64, c, kernel_size=3, stride=1, padding=1, bias=False)
        self.convt_F1 = nn.Sequential(LapFeatureBlock())
        self.convt_I2 = nn.ConvTranspose2d(c, c, kernel_size=4, stride=2, padding=1, bias=False)
        self.convt_R2 = nn.Conv2d(64, c, kernel_size=3, stride=1, padding=1, bias=False)
        self.convt_F2 = nn.Sequential(LapFeatureBlock())
        _normal_fan_out(self)
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                c1, c2, h, w = m.weight.shape
                with torch.no_grad():
                    m.weight.copy_(_bilinear_kernel(h).view(1, 1, h, w).repeat(c1, c2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.convt_F1(self.relu(self.conv_input(x)))
        return self.convt_I1(x) + self.convt_R1(features)


# -- ESRGAN's RRDBNet (Wang et al., ECCVW 2018) ---------------------------------------------
class ResidualDenseBlock5C(nn.Module):
    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block."""

    def __init__(self, nf: int, gc: int = 32):
        super().__init__()
        self.RDB1 = ResidualDenseBlock5C(nf, gc)
        self.RDB2 = ResidualDenseBlock5C(nf, gc)
        self.RDB3 = ResidualDenseBlock5C(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


@SR_BACKBONES.register("esrgan")
class RRDBNet(nn.Module):
    """ESRGAN's generator: 23 RRDBs of 64 features, nearest x2 + conv, HR conv, output conv."""

    from_textzoom_checkpoint = _reads_mask_from("conv_first.weight")

    def __init__(self, mask: bool = False):
        super().__init__()
        self.in_channels = c = _channels(mask)
        nf, nb, gc = 64, 23, 32
        self.conv_first = nn.Conv2d(c, nf, 3, 1, 1)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.upconv1 = nn.Conv2d(nf, nf, 3, 1, 1)  # one x2 stage: log2(scale) of them
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, c, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.RRDB_trunk(fea))
        fea = self.lrelu(self.upconv1(F.interpolate(fea, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.HRconv(fea)))
