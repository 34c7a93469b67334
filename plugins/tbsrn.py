"""TBSRN (Chen et al., "Scene Text Telescope: Text-Focused Scene Image Super-Resolution", CVPR 2021).

Module tree, state_dict keys and forward of the official code (github.com/FudanVI/FudanOCR,
``scene-text-telescope/model/tbsrn.py`` with ``stn_head.py`` and
``tps_spatial_transformer.py``), so its published checkpoint (TextZoom layout,
``info.arch = 'tbsrn'``) loads with no key left over and gives the same output.

TSRN's skeleton in which each residual block's GRUs give way to a transformer layer over
the 16x64 feature map (4 heads, 128 = 64 features + 64 channels of 2D sin/cos position,
layer norms with the unbiased std as the official ``LayerNorm``). Kept from the official
file although its forward never uses them: the input ``conv``/``bn`` and each block's
``gru1``/``gru2`` and ``compress_attention_linear`` (their weights are in every checkpoint
and are counted as parameters). Defaults are the official training command
(``python main.py --STN ...``, no ``--mask``): STN on, 3 channels. The STN head reads the
16x64 LR directly (its last pooling is 1x2), and the TPS sampling uses ``align_corners=True``,
the only behaviour of the torch 1.2 the official code pins.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.errors import TsrxError
from tsrx.registry import SR_BACKBONES
from tsrx_builtin.textzoom_baselines import options_from_weights
from tsrx_builtin.tps_stn import LRSTNHead, TPSSpatialTransformer
from tsrx_builtin.tsrn import (
    Mish,
    tsrn_body_end,
    tsrn_head,
    tsrn_tail,
)

FEATURE_SIZE = (16, 64)  # the LR size: the transformer's positions are fixed to it
POSITION_CHANNELS = 64
MODEL_DIM = 128
HEADS = 4


def positional_encoding_2d(channels: int, height: int, width: int) -> torch.Tensor:
    """(C, H, W) sin/cos code: first half of the channels for x, second half for y."""
    pe = torch.zeros(channels, height, width)
    half = channels // 2
    div = torch.exp(torch.arange(0.0, half, 2) * -(math.log(10000.0) / half))
    pos_w = torch.arange(0.0, width).unsqueeze(1)
    pos_h = torch.arange(0.0, height).unsqueeze(1)
    pe[0:half:2] = torch.sin(pos_w * div).T.unsqueeze(1).expand(-1, height, -1)
    pe[1:half:2] = torch.cos(pos_w * div).T.unsqueeze(1).expand(-1, height, -1)
    pe[half::2] = torch.sin(pos_h * div).T.unsqueeze(2).expand(-1, -1, width)
    pe[half + 1 :: 2] = torch.cos(pos_h * div).T.unsqueeze(2).expand(-1, -1, width)
    return pe


class LayerNorm(nn.Module):
    """a * (x - mean) / (std + eps) + b with the unbiased std (not nn.LayerNorm's variance)."""

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        return self.a_2 * (x - mean) / (x.std(-1, keepdim=True) + self.eps) + self.b_2


class MultiHeadedAttention(nn.Module):
    """Four linear maps (q, k, v, out) and scaled dot-product attention with dropout."""

    def __init__(self, h: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        self.d_k = d_model // h
        self.h = h
        # deep copies of one layer, as the official clones(): they start equal, then the
        # block's xavier init redraws their weights (their biases stay equal)
        self.linears = nn.ModuleList(_clones(nn.Linear(d_model, d_model), 4))
        self.dropout = nn.Dropout(p=dropout)
        self.compress_attention_linear = nn.Linear(h, 1)  # unused by the official forward

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        b = query.shape[0]
        q, k, v = [
            lin(x).view(b, -1, self.h, self.d_k).transpose(1, 2)
            for lin, x in zip(self.linears, (query, key, value))
        ]
        p = self.dropout.p if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.linears[-1](x.transpose(1, 2).reshape(b, -1, self.h * self.d_k))


def _clones(module: nn.Module, n: int) -> list[nn.Module]:
    return [copy.deepcopy(module) for _ in range(n)]


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class FeatureEnhancer(nn.Module):
    """One transformer layer over the H*W positions of (B, 64, H*W) features -> (B, 64, H*W)."""

    def __init__(self):
        super().__init__()
        self.multihead = MultiHeadedAttention(h=HEADS, d_model=MODEL_DIM, dropout=0.1)
        self.mul_layernorm1 = LayerNorm(MODEL_DIM)
        self.pff = PositionwiseFeedForward(MODEL_DIM, MODEL_DIM)
        self.mul_layernorm3 = LayerNorm(MODEL_DIM)
        self.linear = nn.Linear(MODEL_DIM, 64)
        position = positional_encoding_2d(POSITION_CHANNELS, *FEATURE_SIZE).view(
            1, POSITION_CHANNELS, -1
        )
        self.register_buffer("position", position, persistent=False)  # not in official state_dicts

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, self.position.expand(features.shape[0], -1, -1)], 1).transpose(
            1, 2
        )
        x = self.mul_layernorm1(x + self.multihead(x, x, x))
        x = self.mul_layernorm3(x + self.pff(x))
        return self.linear(x).transpose(1, 2)


class GruBlock(nn.Module):
    """1x1 conv + bidirectional GRU: built (its weights are in the checkpoints), never run."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, padding=0)
        self.gru = nn.GRU(channels, channels // 2, bidirectional=True, batch_first=True)


class RecurrentResidualBlock(nn.Module):
    """conv-BN-mish-conv-BN, then the transformer layer on that residual; x + residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = GruBlock(channels)
        self.prelu = Mish()  # the official attribute name, although it is mish
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = GruBlock(channels)
        self.feature_enhancer = FeatureEnhancer()
        for p in self.parameters():  # the official init of every block
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        b, c, h, w = residual.shape
        return x + self.feature_enhancer(residual.reshape(b, c, h * w)).reshape(b, c, h, w)


@SR_BACKBONES.register("tbsrn")
class TBSRN(nn.Module):
    """TBSRN x2: (B, C, 16, 64) -> (B, C, 32, 128), C = 4 with ``mask`` else 3.

    ``blocks`` (official ``srb_nums``), ``mask``, ``stn`` (TPS alignment of the input, in
    training mode only). ``hidden_units`` is fixed at 32 by the official transformer (64
    features + 64 position channels = its 128 dimensions): another value is an error.
    """

    def __init__(
        self, blocks: int = 5, hidden_units: int = 32, mask: bool = False, stn: bool = True
    ):
        super().__init__()
        if 2 * hidden_units != MODEL_DIM - POSITION_CHANNELS:
            raise TsrxError(
                f"tbsrn: hidden_units = {hidden_units}, but TBSRN's transformer takes "
                f"{MODEL_DIM - POSITION_CHANNELS} features (hidden_units = 32)"
            )
        self.in_channels = 4 if mask else 3
        self.blocks = blocks
        self.stn = stn
        channels = 2 * hidden_units
        # built by the official constructor (input_channel = 3) but not used by its forward
        self.conv = nn.Conv2d(3, 3, 3, 1, 1)
        self.bn = nn.BatchNorm2d(3)
        self.relu = nn.ReLU()
        self.block1 = tsrn_head(self.in_channels, channels)
        for i in range(blocks):
            setattr(self, f"block{i + 2}", RecurrentResidualBlock(channels))
        setattr(self, f"block{blocks + 2}", tsrn_body_end(channels))
        setattr(self, f"block{blocks + 3}", tsrn_tail(channels, self.in_channels))
        if stn:
            self.tps = TPSSpatialTransformer(FEATURE_SIZE)
            self.stn_head = LRSTNHead(self.in_channels)

    @classmethod
    def from_textzoom_checkpoint(cls, obj: Any) -> tuple[dict, dict]:
        """``mask`` from the input conv's channels and ``stn`` from the presence of the STN
        head's weights: the official ``info`` records neither ``--mask`` nor ``--STN``."""
        options, weights = options_from_weights(obj, "tbsrn", "block1.0.weight")
        options["stn"] = any(k.startswith("stn_head.") for k in weights)
        return options, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stn and self.training:
            x = self.tps(x, self.stn_head(x))
        head = self.block1(x)
        y = head
        for i in range(2, self.blocks + 3):
            y = getattr(self, f"block{i}")(y)
        return torch.tanh(getattr(self, f"block{self.blocks + 3}")(head + y))
