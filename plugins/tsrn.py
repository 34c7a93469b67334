"""TSRN (Wang et al., "Scene Text Image Super-Resolution in the Wild", ECCV 2020).

Same architecture, state_dict keys and shapes as the official TextZoom code
(github.com/JasonBoy1/TextZoom, ``src/model/tsrn.py`` with ``recognizer/stn_head.py`` and
``recognizer/tps_spatial_transformer.py``), so its ``model_best.pth`` (weights under
``state_dict_G``) loads with no key left over:

- ``block1``: Conv9x9(C_in -> 2h) + PReLU; ``block2..block{n+1}``: recurrent residual blocks;
  ``block{n+2}``: Conv3x3 + BatchNorm; ``block{n+3}``: x2 PixelShuffle stage(s), Conv9x9 -> C_in;
  output ``tanh(block{n+3}(block1 + block{n+2}))``.
- ``tps`` / ``stn_head``: the TPS spatial transformer aligning the LR input, training only
  (``tps_stn.py``, shared with TBSRN, TPGSR and TATT).

Same math as the official code, arranged for speed (``bench/``, docs/performance.md):
activations stay NHWC (channels_last) through the network, and on CPU the GRU blocks run
both directions' recurrence by hand, the 1x1 conv folded into the per-step input projection,
with a hand-written backward (``GruBlock``; the recurrence in ``gru_scan.py``); the
x2 upsample's 9x9 output conv runs before the pixel shuffle as a 16-output 5x5 conv
(``_low_res_weight``); the output is returned contiguous (NCHW).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.config.schema import PositiveInt
from tsrx.errors import TsrxError
from tsrx.registry import SR_BACKBONES
from tsrx_builtin import gru_native_train
from tsrx_builtin.gru_scan import BiGruRecurrence, ScanOrder
from tsrx_builtin.mish import mish
from tsrx_builtin.tps_stn import STN_INPUT_SIZE, STNHead, TPSSpatialTransformer


class Mish(nn.Module):
    """x * tanh(softplus(x)); the official ``mish`` module (no parameters). On CPU with one
    exponential per element instead of three (``mish.py``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


# How a GruBlock runs its recurrence: "scan" (tsrx's own, BiGruRecurrence), "nn.GRU" (torch's
# module: cuDNN on CUDA) or "auto" (the scan on CPU, nn.GRU elsewhere). Same math and weights.
Recurrence = Literal["auto", "scan", "nn.GRU"]


class GruBlock(nn.Module):
    """1x1 conv, then a bidirectional GRU along image rows (width) or columns (height).

    Input and output are NHWC in memory (channels_last), so the convolutions around the
    block keep their faster NHWC path. Two ways to the same math, chosen by ``recurrence``
    (``auto``: the scan on CPU, ``nn.GRU`` elsewhere):

    - ``nn.GRU``: one cuDNN call for the whole sequence on CUDA (on an H200 its backward is
      83% of the TSRN train step, docs/performance.md);
    - ``scan``: where ``nn.GRU`` runs each direction's steps as separate small ops and the
      layer is bound by memory traffic (CPU), ``BiGruRecurrence`` runs both directions step
      by step with a hand-written backward: the 1x1 conv is folded into the input projection
      (``W_ih @ W_conv``; autograd gives both parameters their gradients), each step projects
      its own input into a small reused buffer instead of the whole sequence at once, and
      each step's states go straight into the NHWC output. Gates as ``nn.GRU``:
      ``r, z = sigmoid(.)``, ``n = tanh(x_n + r * (W_hn h + b_hn))``, ``h' = (1 - z) n + z h``.
    """

    def __init__(
        self,
        channels: int,
        along_height: bool,
        recurrence: Recurrence = "auto",
        in_channels: int | None = None,
        batch_first: bool = False,
    ):
        """``in_channels`` (default ``channels``) into the 1x1 conv; ``batch_first``: the
        layout of the ``nn.GRU`` (TPGSR's and TATT's blocks have it; the scan ignores it)."""
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels or channels, channels, kernel_size=1)
        self.gru = nn.GRU(channels, channels // 2, bidirectional=True, batch_first=batch_first)
        self.along_height = along_height
        self.recurrence = recurrence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scan = self.recurrence == "scan" or (self.recurrence == "auto" and x.device.type == "cpu")
        return self._scan(x) if scan else self._nn_gru(x)

    def _nn_gru(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # (T, N, C) with T the scanned axis
        seq = x.permute(2, 0, 3, 1) if self.along_height else x.permute(3, 0, 2, 1)
        t = seq.shape[0]
        seq = F.linear(seq.reshape(t, -1, c), self.conv1.weight.flatten(1), self.conv1.bias)
        out = self.gru(seq)[0].view(t, b, -1, c)
        nhwc = out.permute(1, 0, 2, 3) if self.along_height else out.permute(1, 2, 0, 3)
        return nhwc.contiguous().permute(0, 3, 1, 2)

    def _scan(self, x: torch.Tensor) -> torch.Tensor:
        # the recurrence writes into buffers of one dtype, autocast off inside it
        dtype = self._scan_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            return self._scan_one_dtype(x.to(dtype), dtype)

    def _scan_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The recurrence's dtype: bfloat16 under bfloat16 autocast (``precision = "bf16"``),
        else the weights' (float32: exact, as before).

        Why bf16 there: at batch 64, 1 thread, the TSRN eval forward ran 1.24x and the train
        step 1.09x faster than bf16 with a float32 recurrence, the output 75.6 dB from fp32's
        (77.4 dB with the float32 recurrence); the agreement in the issue's terms is in
        docs/performance.md ("bf16 recurrence"). The weights stay float32 parameters: they
        are cast per call, and their gradients come back in float32.
        """
        device = x.device.type
        if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == (
            torch.bfloat16
        ):
            return torch.bfloat16
        return self.gru.weight_hh_l0.dtype

    def _scan_one_dtype(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        k = self.gru.hidden_size
        # (T, B, ., C) with T the scanned axis: one copy of the C-channel input
        seq = ScanOrder.apply(x, self.along_height)
        g = self.gru
        w_ih = torch.stack((g.weight_ih_l0, g.weight_ih_l0_reverse))  # (2, 3k, C)
        w_hh = torch.stack((g.weight_hh_l0, g.weight_hh_l0_reverse))  # (2, 3k, k)
        b_hh = torch.stack((g.bias_hh_l0, g.bias_hh_l0_reverse))
        # the 1x1 conv folded into the input projection, the hidden r|z biases joined to the
        # input ones (summed before the sigmoid)
        w_fold = w_ih @ self.conv1.weight.flatten(1)
        b_fold = torch.stack((g.bias_ih_l0, g.bias_ih_l0_reverse)) + w_ih @ self.conv1.bias
        b_fold = b_fold + F.pad(b_hh[:, : 2 * k], (0, k))
        # no-ops in the weights' own dtype: the fp32 path is unchanged
        weights = (w.to(dtype) for w in (w_fold, b_fold, w_hh, b_hh[:, 2 * k :]))
        inputs = (seq, *weights)
        keep = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
        if keep and gru_native_train.applies(seq, w_hh):  # float32 training on the CPU
            out = gru_native_train.NativeBiGruRecurrence.apply(*inputs, self.along_height)
        else:
            out = BiGruRecurrence.apply(*inputs, self.along_height, keep)
        return out.permute(0, 3, 1, 2)


class RecurrentResidualBlock(nn.Module):
    """conv-BN-mish-conv-BN, a column GRU on that residual, then a row GRU on x + residual."""

    def __init__(self, channels: int, recurrence: Recurrence = "auto"):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = GruBlock(channels, along_height=True, recurrence=recurrence)
        self.prelu = Mish()  # the official attribute name, although it is mish
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = GruBlock(channels, along_height=False, recurrence=recurrence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        return self.gru2(x + self.gru1(residual))


class UpsampleBlock(nn.Module):
    """Conv3x3 to 4C channels, PixelShuffle x2, mish."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, kernel_size=3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.prelu = Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


# The output: "none" = the official tanh of the tail; "bicubic" = the bicubic x2 upscale of
# the input plus that tanh (TSRN, TPGSR and TATT share it: docs/models.md).
Residual = Literal["none", "bicubic"]


def check_residual(residual: str, name: str) -> None:
    """A bad ``residual`` named (the config checks it too; direct construction does not)."""
    if residual not in ("none", "bicubic"):
        raise TsrxError(f"{name}: residual must be 'none' or 'bicubic', got {residual!r}")


def start_at_bicubic(conv: nn.Conv2d) -> None:
    """Zero the tail's last conv, so that with ``residual = "bicubic"`` an untrained model
    returns the bicubic upscale exactly and training learns only the correction."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def add_bicubic(lr: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` plus the bicubic x2 upscale of ``lr`` (the un-aligned input: the STN aligns
    only in training, so a trained model's correction is relative to what it is given)."""
    size = (2 * lr.shape[-2], 2 * lr.shape[-1])
    return out + F.interpolate(lr, size, mode="bicubic", align_corners=False)


def tsrn_head(in_channels: int, channels: int) -> nn.Sequential:
    """``block1`` of TSRN and the backbones built on its frame (TBSRN, TPGSR, TATT): 9x9 conv
    to ``channels``, PReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=9, padding=4), nn.PReLU())


def tsrn_body_end(channels: int) -> nn.Sequential:
    """``block{n+2}``: the 3x3 conv + batch norm closing the residual body."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.BatchNorm2d(channels)
    )


def tsrn_tail(channels: int, out_channels: int) -> nn.Sequential:
    """``block{n+3}`` at x2: one upsample stage, then the 9x9 conv back to image channels."""
    return nn.Sequential(
        UpsampleBlock(channels), nn.Conv2d(channels, out_channels, kernel_size=9, padding=4)
    )


def _low_res_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 9x9 conv's weight rewritten to act before a x2 pixel shuffle instead of after it.

    ``conv9x9(pixel_shuffle(u))`` equals ``pixel_shuffle(conv5x5(u, W'))`` (padding 2): each
    of the 2x2 output phases is its own output channel and each input phase its own input
    channel, so ``W'`` has shape (4 O, 4 C, 5, 5) and holds the 9x9 taps (or zeros where a
    5x5 tap falls outside the 9x9 kernel):
    ``W'[4o + 2py + px, 4c + 2dy + dx, i, j] = w[o, c, 2i + dy - py, 2j + dx - px]``.
    Why: with 4 output channels the 9x9 conv used a quarter of each vector unit (forward and
    weight gradient ran as slowly as a 16-output conv); with 16 it uses all of it, for 23%
    more multiply-adds, and the pixel shuffle moves from 64 channels to 4.
    """
    out_ch, in_ch, k, _ = weight.shape
    o, py, px, c, dy, dx, i, j = torch.meshgrid(
        *(torch.arange(n, device=weight.device) for n in (out_ch, 2, 2, in_ch, 2, 2, 5, 5)),
        indexing="ij",
    )
    a, b = 2 * i + dy - py, 2 * j + dx - px
    inside = (a >= 0) & (a < k) & (b >= 0) & (b < k)
    flat = ((o * in_ch + c) * k + a.clamp(0, k - 1)) * k + b.clamp(0, k - 1)
    taps = torch.cat([weight.flatten(), weight.new_zeros(1)])  # the last entry: a zero tap
    index = torch.where(inside, flat, torch.full_like(flat, weight.numel()))
    return taps[index.flatten()].view(4 * out_ch, 4 * in_ch, 5, 5)


@SR_BACKBONES.register("tsrn")
class TSRN(nn.Module):
    """TSRN x2 super-resolver: (B, C, 16, 64) -> (B, C, 32, 128), C = 4 with ``mask`` else 3.

    Options: ``blocks`` recurrent residual blocks (official ``srb_nums``), ``hidden_units``
    (the body has 2 x hidden_units channels), ``mask`` (4th input/output channel), ``stn``
    (TPS alignment of the input, in training mode only), ``init`` (``default``: PyTorch's
    initialisation as in the official code; ``kaiming``: Kaiming-normal convolutions and
    orthogonal recurrent weights; the STN head keeps its identity start either way),
    ``recurrence`` (how the GRU blocks run: ``auto`` = tsrx's scan on CPU, ``nn.GRU`` (cuDNN)
    on CUDA; ``scan`` or ``nn.GRU`` everywhere; same math and weights, a speed choice,
    docs/performance.md) and ``upsample_stages``:

    ``residual``: ``none`` (the official output, ``tanh`` of the tail) or ``bicubic``: the
    output is the bicubic x2 upscale of the input plus ``tanh`` of the tail (global residual
    learning, as VDSR), the tail's last conv starting at zero so that an untrained model
    returns bicubic exactly and training only has to learn the correction; same keys and
    shapes, so official weights load into either (they were trained for ``none``).

    ``upsample_stages``:

    - 1: the official x2 PixelShuffle stage (identical keys);
    - 2: two x2 PixelShuffle stages (x4), then a learned stride-2 3x3 convolution back to
      x2, so the output stays 32x128; ``block{n+3}`` gains layers and its final conv moves
      from index 1 to 3, so official checkpoints load only into the default.
    """

    def __init__(
        self,
        blocks: PositiveInt = 5,
        hidden_units: PositiveInt = 32,
        mask: bool = True,
        stn: bool = True,
        upsample_stages: Literal[1, 2] = 1,
        init: Literal["default", "kaiming"] = "default",
        recurrence: Recurrence = "auto",
        residual: Residual = "none",
    ):
        super().__init__()
        check_residual(residual, "tsrn")
        self.in_channels = 4 if mask else 3
        self.residual = residual
        self.blocks = blocks
        self.stn = stn
        channels = 2 * hidden_units
        self.block1 = tsrn_head(self.in_channels, channels)
        for i in range(blocks):
            setattr(self, f"block{i + 2}", RecurrentResidualBlock(channels, recurrence))
        setattr(self, f"block{blocks + 2}", tsrn_body_end(channels))
        tail: list[nn.Module] = [UpsampleBlock(channels) for _ in range(upsample_stages)]
        if upsample_stages == 2:
            tail.append(nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1))
        tail.append(nn.Conv2d(channels, self.in_channels, kernel_size=9, padding=4))
        setattr(self, f"block{blocks + 3}", nn.Sequential(*tail))
        self._body = [f"block{i}" for i in range(2, blocks + 3)]
        self._tail = f"block{blocks + 3}"
        if stn:
            self.tps = TPSSpatialTransformer()
            self.stn_head = STNHead(self.in_channels)
        if init == "kaiming":
            self._kaiming_init()
        if residual == "bicubic":
            start_at_bicubic(tail[-1])

    def _kaiming_init(self) -> None:
        for name, m in self.named_modules():
            if name.startswith("stn_head"):
                continue
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GRU):
                for pname, p in m.named_parameters():
                    if pname.startswith("weight_hh"):
                        for gate in p.data.chunk(3, 0):
                            nn.init.orthogonal_(gate)
                    elif pname.startswith("weight_ih"):
                        nn.init.xavier_uniform_(p)
                    else:
                        nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._forward(x)
        return add_bicubic(x, out) if self.residual == "bicubic" else out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # NHWC (channels_last) from here to the output: the convolutions and the pixel
        # shuffle are faster on it (CPU and cuDNN) and the GRU blocks keep it
        x = x.contiguous(memory_format=torch.channels_last)
        if self.stn and self.training:
            x = F.interpolate(x, STN_INPUT_SIZE, mode="bilinear", align_corners=True)
            x = self.tps(x, self.stn_head(x))
        head = self.block1(x.contiguous(memory_format=torch.channels_last))
        y = head
        for name in self._body:
            y = getattr(self, name)(y)
        tail = getattr(self, self._tail)
        if len(tail) != 2:  # upsample_stages = 2: as the layers say
            return torch.tanh(tail(head + y)).contiguous()
        # the official tail (x2 upsample, then the 9x9 conv), computed before the pixel
        # shuffle: mish is elementwise, so it commutes with the shuffle, and the 9x9 conv
        # becomes a 5x5 conv with 16 outputs on the low-resolution grid (_low_res_weight)
        upsample, conv = tail
        u = upsample.prelu(upsample.conv(head + y))
        out = F.conv2d(u, _low_res_weight(conv.weight), conv.bias.repeat_interleave(4), padding=2)
        return torch.tanh(F.pixel_shuffle(out, 2)).contiguous()
