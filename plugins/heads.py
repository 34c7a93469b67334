"""Recognition heads: replace a recognizer's classifier on its sequence features.

Every head maps features (T, B, in_features) to logits (T, B, num_classes); tsrx passes
``in_features`` (the recognizer's ``feature_dim``) and ``num_classes`` itself, the other
constructor arguments are TOML options of ``[model.head]``. A new head is one such class
registered with ``@HEADS.register("name")``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tsrx.config.schema import Fraction, PositiveInt
from tsrx.errors import TsrxError
from tsrx.registry import HEADS

Activation = Literal["relu", "gelu", "tanh", "mish", "silu"]
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "mish": nn.Mish, "silu": nn.SiLU}


def _mlp(
    in_features: int, num_classes: int, hidden_units: int, dropout: float, activation: str
) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden_units),
        _ACTIVATIONS[activation](),
        nn.Dropout(dropout),
        nn.Linear(hidden_units, num_classes),
    )


class SideRNN(nn.Module):
    """A bidirectional LSTM beside the main path; its output joins the input features.

    ``join = "concat"``: output (T, B, in_features + 2 x rnn_hidden);
    ``join = "add"``: output (T, B, in_features), needs 2 x rnn_hidden == in_features.
    """

    def __init__(self, in_features: int, rnn_hidden: int, join: str):
        super().__init__()
        if join == "add" and 2 * rnn_hidden != in_features:
            raise TsrxError(
                f"model.head: join = 'add' needs 2 x rnn_hidden == in_features "
                f"({in_features}), got rnn_hidden = {rnn_hidden}; set rnn_hidden = "
                f"{in_features // 2} or join = 'concat'"
            )
        self.rnn = nn.LSTM(in_features, rnn_hidden, bidirectional=True)
        self.join = join
        self.out_features = in_features if join == "add" else in_features + 2 * rnn_hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.rnn(x)[0]
        return x + side if self.join == "add" else torch.cat([x, side], dim=2)


@HEADS.register("dense")
class DenseHead(nn.Module):
    """One linear layer (T, B, C) -> (T, B, K), optionally after dropout on the features."""

    def __init__(self, in_features: int, num_classes: int, dropout: Fraction = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x))


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """Linear(C, hidden_units) - activation - dropout - Linear(hidden_units, K) per time step."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden_units: PositiveInt = 256,
        dropout: Fraction = 0.1,
        activation: Activation = "relu",
    ):
        super().__init__()
        self.mlp = _mlp(in_features, num_classes, hidden_units, dropout, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@HEADS.register("sidernn")
class SideRNNHead(nn.Module):
    """A side bidirectional LSTM joined to the features (``join``), then one linear layer."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        rnn_hidden: PositiveInt = 256,
        join: Literal["concat", "add"] = "concat",
        dropout: Fraction = 0.0,
    ):
        super().__init__()
        self.side = SideRNN(in_features, rnn_hidden, join)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.side.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.side(x)))


@HEADS.register("sidernn+mlp")
class SideRNNMLPHead(nn.Module):
    """The side LSTM of ``sidernn`` followed by the MLP of ``mlp`` instead of one linear layer."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        rnn_hidden: PositiveInt = 256,
        join: Literal["concat", "add"] = "concat",
        hidden_units: PositiveInt = 256,
        dropout: Fraction = 0.1,
        activation: Activation = "relu",
    ):
        super().__init__()
        self.side = SideRNN(in_features, rnn_hidden, join)
        self.mlp = _mlp(self.side.out_features, num_classes, hidden_units, dropout, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.side(x))
