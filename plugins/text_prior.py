"""Text-prior SR backbones: TPGSR (``tsrn_tl_cascade``) and TATT (``tatt``).

Both are TSRN bodies whose recurrent residual blocks also read a *text prior*: the per-frame
class probabilities of a recognizer (the TP generator, a CRNN) reading the LR image, in the
official layout (B, 37, 1, 26) = ``softmax(logits (T, B, K)).permute(1, 0, 2).unsqueeze(1)
.permute(0, 3, 1, 2)``. ``forward(lr, prior)``; the joint model (``coupling =
"text_prior"``) computes the prior (tsrx/models/joint.py).

- TPGSR (Ma et al., "Text Prior Guided Scene Text Image Super-Resolution", TIP 2023;
  github.com/mjq11302010044/TPGSR ``model/tsrn.py`` ``TSRN_TL`` + ``InfoGen``): the prior is
  lifted by four transposed convolutions (``infoGen``) to a (B, 32, 1, 203) map, resized
  bilinearly to the LR size and concatenated to each block's residual before its first GRU.
- TATT (Ma et al., "A Text Attention Network for Spatial Deformation Robust Scene Text Image
  Super-resolution", CVPR 2022; github.com/mjq11302010044/TATT ``model/tsrn.py``
  ``TSRN_TL_TRANS`` + ``TPInterpreter``, ``model/transformer_v2.py`` ``InfoTransformer``):
  a transformer decoder whose queries are the LR image features cross-attends to the
  encoded prior; returns ``(sr, attention weights)`` as the official code does.

The prior's class count follows the generator (``prior_classes``, which tsrx sets from the
``[model.prior]`` recognizer's ``num_classes``): 37 for CRNN (the official path, the default),
97 for ``easyocr`` (english_g2, case kept: the prior tells an upper-case glyph from a
lower-case one, and the text-prior loss compares LR and HR priors, no labels) or 71 with
``case = "merge"``. Only ``infoGen``'s first layer depends on it; any frame count T works.

Module trees, state_dict keys and shapes are the official ones, so published checkpoints
(``state_dict_G``) load with no key left over. Shared TSRN parts (mish, upsampling, TPS)
come from plugins/tsrn.py. What differs from the official code is in docs/models.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.errors import TsrxError
from tsrx.registry import SR_BACKBONES
from tsrx_builtin import rotation
from tsrx_builtin.tp_interpreter import TPInterpreter
from tsrx_builtin.tps_stn import LRSTNHead, TPSSpatialTransformer
from tsrx_builtin.tsrn import GruBlock as TsrnGruBlock  # its CPU scan serves TPGSR, TATT
from tsrx_builtin.tsrn import (
    Mish,
    Residual,
    add_bicubic,
    check_residual,
    start_at_bicubic,
    tsrn_body_end,
    tsrn_head,
    tsrn_tail,
)

PRIOR_CLASSES = 37  # CRNN's blank + 0-9a-z: the official prior, the default
PRIOR_STEPS = 26  # CRNN's frames for a 32x100 input
LR_SIZE = (16, 64)


def check_prior(prior: torch.Tensor | None, x: torch.Tensor, classes: int, name: str) -> None:
    """The prior must be (B, classes, 1, T): a clear error instead of a shape error inside."""
    if prior is None:
        raise TsrxError(
            f"{name}: a text-prior backbone needs the prior as its second forward "
            'argument; set model.coupling = "text_prior" with a [model.prior] '
            "generator"
        )
    if (
        prior.dim() != 4
        or prior.shape[0] != x.shape[0]
        or prior.shape[1] != classes
        or prior.shape[2] != 1
    ):
        raise TsrxError(
            f"{name}: text prior of shape {tuple(prior.shape)}, expected "
            f"(B={x.shape[0]}, {classes}, 1, T) (class probabilities per frame)"
        )


def _check_classes(prior_classes: int | None, name: str) -> int:
    """The prior's class count: tsrx passes the generator's; None (no generator) is CRNN's 37."""
    if prior_classes is None:
        return PRIOR_CLASSES
    if prior_classes < 2:
        raise TsrxError(
            f"{name}: prior_classes must be >= 2 (blank + a character), got {prior_classes}"
        )
    return prior_classes


class GruBlock(TsrnGruBlock):
    """1x1 conv (in -> out channels), then a bidirectional GRU (batch_first) along the width,
    or along the height with ``along_height`` (the official code transposes H and W around
    the block for that). Official layout: ``conv1``, ``gru``. On CPU it runs TSRN's
    hand-written scan (the 1x1 conv folded into the input projection, docs/performance.md),
    elsewhere the official transpose + ``nn.GRU``: the same math."""

    def __init__(self, in_channels: int, out_channels: int, along_height: bool = False):
        if out_channels % 2:
            raise TsrxError(f"GruBlock: out_channels must be even, got {out_channels}")
        super().__init__(out_channels, along_height, in_channels=in_channels, batch_first=True)

    def _nn_gru(self, x: torch.Tensor) -> torch.Tensor:
        if self.along_height:
            x = x.transpose(-1, -2)
        x = self.conv1(x)
        b, c, h, w = x.shape
        seq = x.permute(0, 2, 3, 1).reshape(b * h, w, c)
        out = self.gru(seq)[0].reshape(b, h, w, c).permute(0, 3, 1, 2)
        return out.transpose(-1, -2) if self.along_height else out


class TextGuidedBlock(nn.Module):
    """The official ``RecurrentResidualBlockTL``: conv-BN-mish-conv-BN, the prior map
    concatenated to that residual, a column GRU (C + text -> C), a row GRU on x + residual."""

    def __init__(self, channels: int, text_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = GruBlock(channels + text_channels, channels, along_height=True)
        self.prelu = Mish()  # the official attribute name
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = GruBlock(channels, channels)

    def forward(self, x: torch.Tensor, prior_map: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        residual = self.gru1(torch.cat([residual, prior_map], 1))
        return self.gru2(x + residual)


class ModernTPS(TPSSpatialTransformer):
    """TextZoom's TPS, sampling with ``align_corners=False``: TPGSR and TATT call
    ``F.grid_sample`` without the argument under torch >= 1.3, where False is the default."""

    def forward(self, x: torch.Tensor, source_points: torch.Tensor) -> torch.Tensor:
        b = source_points.shape[0]
        y = torch.cat([source_points, self.padding_matrix.expand(b, 3, 2)], 1)
        source = self.target_coordinate_repr @ (self.inverse_kernel @ y)
        grid = source.view(b, self.height, self.width, 2).clamp(0, 1) * 2 - 1
        return F.grid_sample(x, grid, align_corners=False)


class _TextPriorTSRN(nn.Module):
    """The TSRN frame both backbones share: head, text-guided blocks, tail, optional STN."""

    needs_text_prior = True
    prior_classes = PRIOR_CLASSES
    # the official training's terms (tsrx_builtin.prior_losses), the defaults of [loss]
    # prior (a trainable generator) and consistency (model.rotate_train, TATT's TSC)
    default_losses = {"prior": {"type": "tpgsr"}, "consistency": {"type": "tsc"}}
    # model.rotate_train rotates each training pair as the official TATT training does
    random_rotation = staticmethod(rotation.random_rotation)
    rotate = staticmethod(rotation.rotate)

    def __init__(
        self,
        blocks: int,
        hidden_units: int,
        mask: bool,
        stn: bool,
        text_channels: int,
        info_gen: nn.Module,
        prior_classes: int = PRIOR_CLASSES,
        residual: Residual = "none",
        name: str = "",
    ):
        super().__init__()
        check_residual(residual, name)
        self.residual = residual
        self.prior_classes = prior_classes
        if blocks < 1:
            raise TsrxError(f"blocks must be >= 1, got {blocks}")
        self.in_channels = 4 if mask else 3
        self.blocks = blocks
        self.stn = stn
        channels = 2 * hidden_units
        self.block1 = tsrn_head(self.in_channels, channels)
        for i in range(blocks):
            setattr(self, f"block{i + 2}", TextGuidedBlock(channels, text_channels))
        self.infoGen = info_gen  # the prior -> feature-map module, in the official key order
        setattr(self, f"block{blocks + 2}", tsrn_body_end(channels))
        tail = tsrn_tail(channels, self.in_channels)
        setattr(self, f"block{blocks + 3}", tail)
        if residual == "bicubic":
            start_at_bicubic(tail[-1])
        if stn:
            self.tps = ModernTPS(LR_SIZE)
            self.stn_head = LRSTNHead(self.in_channels)

    def _align(self, x: torch.Tensor) -> torch.Tensor:
        if self.stn and self.training:
            x = self.tps(x, self.stn_head(x))
        return x

    def _body(self, lr: torch.Tensor, head: torch.Tensor, prior_map: torch.Tensor) -> torch.Tensor:
        """The blocks and the tail; ``lr``: the un-aligned input, for ``residual``."""
        y = head
        for i in range(2, self.blocks + 2):
            y = getattr(self, f"block{i}")(y, prior_map)
        y = getattr(self, f"block{self.blocks + 2}")(y)
        out = torch.tanh(getattr(self, f"block{self.blocks + 3}")(head + y))
        return add_bicubic(lr, out) if self.residual == "bicubic" else out


class InfoGen(nn.Module):
    """TPGSR's TP-feature generator: (B, 37, 1, T) -> (B, out, 1, 8T - 5) by four transposed
    convolutions (stride 2, 2, 2 and (2, 1) along the width), each with BN and ReLU."""

    def __init__(self, prior_classes: int, out_channels: int):
        super().__init__()
        self.tconv1 = nn.ConvTranspose2d(prior_classes, 512, 3, 2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(512)
        self.tconv2 = nn.ConvTranspose2d(512, 128, 3, 2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(128)
        self.tconv3 = nn.ConvTranspose2d(128, 64, 3, 2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.tconv4 = nn.ConvTranspose2d(64, out_channels, 3, (2, 1), padding=(1, 0), bias=False)
        self.bn4 = nn.BatchNorm2d(out_channels)

    def forward(self, prior: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.tconv1(prior)))
        x = F.relu(self.bn2(self.tconv2(x)))
        x = F.relu(self.bn3(self.tconv3(x)))
        return F.relu(self.bn4(self.tconv4(x)))


@SR_BACKBONES.register("tsrn_tl_cascade")
class TPGSR(_TextPriorTSRN):
    """TPGSR's SR network (official ``TSRN_TL``, ``--arch tsrn_tl_cascade``):
    ``forward(lr (B, C, 16, 64), prior (B, 37, 1, 26)) -> sr (B, C, 32, 128)``.

    Defaults are the official TextZoom training script (``train_TPGSR-TSRN.sh``: ``--STN
    --mask``, 5 blocks of 32 hidden units, x2). ``text_channels``: the prior map's channels
    (official ``out_text_channels``). The cascade (``--stu_iter``) is the joint model's
    ``prior_stages``; this module is one stage. ``residual``: as TSRN's (``none``: the
    official output; ``bicubic``: bicubic x2 of the input plus the tail, starting at bicubic).
    """

    # official training (interfaces/super_resolution.py): a zero prior for the first quarter
    # of each batch, and the SR loss trains the generator through the prior
    prior_dropout = 0.25
    prior_detach = False

    def __init__(
        self,
        blocks: int = 5,
        hidden_units: int = 32,
        mask: bool = True,
        stn: bool = True,
        text_channels: int = 32,
        prior_classes: int | None = None,
        residual: Residual = "none",
    ):
        prior_classes = _check_classes(prior_classes, "tsrn_tl_cascade")
        info_gen = InfoGen(prior_classes, text_channels)
        super().__init__(
            blocks,
            hidden_units,
            mask,
            stn,
            text_channels,
            info_gen,
            prior_classes,
            residual,
            "tsrn_tl_cascade",
        )

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        check_prior(prior, x, self.prior_classes, "tsrn_tl_cascade")
        aligned = self._align(x)
        head = self.block1(aligned)
        prior_map = F.interpolate(
            self.infoGen(prior), aligned.shape[2:], mode="bilinear", align_corners=True
        )
        return self._body(x, head, prior_map)


# -- TATT -----------------------------------------------------------------------------------
@SR_BACKBONES.register("tatt")
class TATT(_TextPriorTSRN):
    """TATT's SR network (official ``TSRN_TL_TRANS``, ``--arch tatt``):
    ``forward(lr (B, C, 16, 64), prior (B, 37, 1, 26)) -> (sr (B, C, 32, 128), attention
    (B, 1024, 26))``; tsrx's joint model uses the image.

    Defaults are the official TextZoom training script (``train_TATT.sh``: ``--STN --mask``,
    5 blocks of 32 hidden units, x2, a 64-channel prior map). The transformer's width is the
    body's (``2 * hidden_units``), as the official ``feature_in``. ``residual``: as TSRN's
    (``none``: the official output; ``bicubic``: bicubic x2 of the input plus the tail).
    """

    # official training: no prior dropout; the prior (and the image between cascade stages)
    # is detached, so the generator learns from the text-prior loss only
    prior_dropout = 0.0
    prior_detach = True

    def __init__(
        self,
        blocks: int = 5,
        hidden_units: int = 32,
        mask: bool = True,
        stn: bool = True,
        text_channels: int = 64,
        prior_classes: int | None = None,
        residual: Residual = "none",
    ):
        prior_classes = _check_classes(prior_classes, "tatt")
        if text_channels != 2 * hidden_units:
            raise TsrxError(
                f"tatt: text_channels ({text_channels}) must equal 2 * hidden_units "
                f"({2 * hidden_units}): the decoder's queries are the body's features"
            )
        info_gen = TPInterpreter(prior_classes, text_channels, LR_SIZE, feature_in=2 * hidden_units)
        super().__init__(
            blocks,
            hidden_units,
            mask,
            stn,
            text_channels,
            info_gen,
            prior_classes,
            residual,
            "tatt",
        )
        unused = [self.infoGen.fc_feature_in]
        for layer in self.infoGen.transformer.decoder.layers:
            unused += [layer.self_attn, layer.norm1]
        for module in unused:  # never reached by forward: frozen, so DDP waits for no gradient
            module.requires_grad_(False)

    def forward(
        self, x: torch.Tensor, prior: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_prior(prior, x, self.prior_classes, "tatt")
        if tuple(x.shape[2:]) != LR_SIZE:
            raise TsrxError(
                f"tatt: LR images of {tuple(x.shape[2:])}, expected {LR_SIZE} "
                "(its learned query positions are per LR pixel)"
            )
        head = self.block1(self._align(x))
        prior_map, weights = self.infoGen(head, prior)
        return self._body(x, head, prior_map), weights
