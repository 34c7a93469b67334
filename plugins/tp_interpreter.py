"""TATT's TP interpreter: a DETR-style transformer from the text prior to the image features.

The prior's per-frame class probabilities are the encoder's sequence (with sinusoidal
positions); the image features' positions are the decoder's queries, which cross-attend to
it; the result is a prior map the size of the features. Key names are the official ones
(``TSRN_TL_TRANS`` of mjq11302010044/TATT), so official checkpoints load; the SR network that
uses it is ``text_prior.TATT``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PositionalEncoding(nn.Module):
    """Sinusoidal positions (buffer ``pe`` (1, max_len, d), saved in official checkpoints)."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        rate = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model)
        )
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * rate)
        pe[:, 1::2] = torch.cos(position * rate)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


class EncoderLayer(nn.Module):
    """DETR's post-norm encoder layer: positions added to queries and keys, not values."""

    def __init__(self, d_model: int, heads: int, feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.linear1 = nn.Linear(d_model, feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, q, src)[0]))
        ff = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ff))


class DecoderLayer(nn.Module):
    """TATT's ``TransformerDecoderLayer_TP``: cross-attention from the image queries to the
    prior, then the feed-forward; post-norm. ``self_attn``, ``norm1`` and ``dropout1`` exist
    (and are saved) but the official forward never uses them, so they are frozen here."""

    def __init__(self, d_model: int, heads: int, feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, heads, dropout=dropout)
        self.linear1 = nn.Linear(d_model, feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.multihead_attn(tgt + query_pos, memory + pos, memory)
        tgt = self.norm2(tgt + self.dropout2(attended))
        ff = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ff)), weights


class _Layers(nn.Module):
    """Holds ``layers`` (and the decoder's final ``norm``) under the official key names."""

    def __init__(self, layers: list[nn.Module], norm: nn.Module | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if norm is not None:
            self.norm = norm


class InfoTransformer(nn.Module):
    """TATT's ``InfoTransformer``: encoder over the prior, decoder from the image features.

    The query positions are the learned ``init_factor`` (H*W, d) passed through
    ``gru_encoding``, a BiGRU over rows of H*d features; as in the official code that GRU is
    ``batch_first`` but is fed (W, B, H*d), so it runs *across the batch*: a sample's query
    positions depend on its place in the batch. Kept for exact outputs (docs/models.md).
    """

    def __init__(
        self,
        d_model: int,
        heads: int,
        feedforward: int,
        encoder_layers: int,
        decoder_layers: int,
        dropout: float,
        size: tuple[int, int],
    ):
        super().__init__()
        self.encoder = _Layers(
            [EncoderLayer(d_model, heads, feedforward, dropout) for _ in range(encoder_layers)]
        )
        self.decoder = _Layers(
            [DecoderLayer(d_model, heads, feedforward, dropout) for _ in range(decoder_layers)],
            nn.LayerNorm(d_model),
        )
        self.gru_encoding = nn.GRU(
            d_model * size[0], d_model * size[0] // 2, bidirectional=True, batch_first=True
        )
        self.size = size
        for p in self.parameters():  # the official _reset_parameters
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, query: torch.Tensor, tgt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.size
        batch, d = src.shape[1], src.shape[2]
        query = query.unsqueeze(1).expand(-1, batch, -1)  # (HW, B, d)
        query = query.reshape(h, w, batch, d).permute(1, 2, 0, 3).reshape(w, batch, h * d)
        query = self.gru_encoding(query)[0]  # GRU over B
        query = query.reshape(w, batch, h, d).permute(2, 0, 1, 3).reshape(h * w, batch, d)
        memory = src
        for layer in self.encoder.layers:
            memory = layer(memory + src, pos)  # the official encoder adds src before each layer
        out, outputs, weights = tgt, [], None
        for layer in self.decoder.layers:
            out, weights = layer(out, memory, pos, query)
            outputs.append(self.decoder.norm(out))
        return torch.stack(outputs), weights


class TPInterpreter(nn.Module):
    """TATT's TP interpreter: prior (B, 37, 1, T) and image features (B, d, H, W) ->
    a prior map (B, d, H, W) and the last decoder layer's attention (B, H*W, T).
    ``fc_feature_in`` is in the official module and checkpoints but unused (frozen here)."""

    def __init__(
        self,
        prior_classes: int,
        d_model: int,
        size: tuple[int, int],
        feature_in: int,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
    ):
        super().__init__()
        self.fc_in = nn.Linear(prior_classes, d_model)
        self.fc_feature_in = nn.Linear(feature_in, d_model)
        self.activation = nn.PReLU()
        self.transformer = InfoTransformer(
            d_model,
            heads=4,
            feedforward=d_model,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            dropout=0.1,
            size=size,
        )
        self.pe = PositionalEncoding(d_model, dropout=0.1)
        self.init_factor = nn.Embedding(size[0] * size[1], d_model)

    def forward(
        self, features: torch.Tensor, prior: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = features.shape
        tgt = features.reshape(b, c, h * w).permute(2, 0, 1)  # (HW, B, C)
        x = self.activation(self.fc_in(prior.permute(0, 3, 1, 2).squeeze(-1)))  # (B, T, d)
        pos = self.pe(torch.zeros_like(x)).permute(1, 0, 2)  # (T, B, d)
        out, weights = self.transformer(x.permute(1, 0, 2), pos, self.init_factor.weight, tgt)
        prior_map = out.mean(0).permute(1, 2, 0).reshape(b, -1, h, w)
        return prior_map, weights


__all__ = ["TPInterpreter"]
