"""CRNN, the TextZoom accuracy judge, with meijieru/crnn.pytorch's state_dict keys.

Layout and key names follow meijieru/crnn.pytorch ``models/crnn.py`` (``CRNN(32, 1, 37, 256)``
as built by TextZoom's ``CRNN_init``), so its ``crnn.pth`` loads unchanged: ``cnn.conv0`` ...
``cnn.conv6`` (batch norm after conv2, conv4, conv6), ``rnn.0`` and ``rnn.1`` each a
bidirectional LSTM (``.rnn``) followed by a linear layer (``.embedding``).

Classification-head boundary: ``encode`` runs the CNN, all of ``rnn.0`` and the LSTM of
``rnn.1``, giving (T, B, 2 x hidden_units) = (26, B, 512) features; ``classifier`` is
``rnn.1.embedding`` (Linear(512, 37)). A head (``[model.head]``) replaces that last linear
layer only, so the default CRNN keeps exactly meijieru's keys.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.checkpoint import OfficialCheckpoint, strip_module_prefix
from tsrx.config.schema import PositiveInt
from tsrx.models.recognition import Recognition
from tsrx.models.text import VOCABULARIES, ctc_greedy_decode, ctc_greedy_recognize
from tsrx.registry import CHECKPOINT_FORMATS, RECOGNIZERS
from tsrx_builtin.maxpool import MaxPool2d

# TextZoom's parse_crnn_data: bicubic to 32x100, then ITU-R 601 luma of the RGB channels.
INPUT_SIZE = (32, 100)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


class BidirectionalLSTM(nn.Module):
    """A bidirectional LSTM over (T, B, C) followed by a per-step linear layer."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.rnn = nn.LSTM(in_features, hidden, bidirectional=True)
        self.embedding = nn.Linear(hidden * 2, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(self.rnn(x)[0])


def _cnn(in_channels: int, leaky_relu: bool, base: int = 64) -> nn.Sequential:
    # Seven 3x3/2x2 convolutions; pools bring a 32-pixel-high image to height 1
    # (meijieru's ks/ps/nm tables, batch norm on convs 2, 4 and 6); base 64 is meijieru's.
    kernels = [3, 3, 3, 3, 3, 3, 2]
    paddings = [1, 1, 1, 1, 1, 1, 0]
    widths = [base * m for m in (1, 2, 4, 4, 8, 8, 8)]
    pools = {
        0: ((2, 2), (2, 2), (0, 0)),
        1: ((2, 2), (2, 2), (0, 0)),
        3: ((2, 2), (2, 1), (0, 1)),
        5: ((2, 2), (2, 1), (0, 1)),
    }
    cnn = nn.Sequential()
    n_pool = 0
    for i, (k, p, out) in enumerate(zip(kernels, paddings, widths)):
        cnn.add_module(
            f"conv{i}", nn.Conv2d(in_channels if i == 0 else widths[i - 1], out, k, 1, p)
        )
        if i in (2, 4, 6):
            cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(out))
        cnn.add_module(f"relu{i}", nn.LeakyReLU(0.2, inplace=True) if leaky_relu else nn.ReLU(True))
        if i in pools:
            kernel, stride, pad = pools[i]
            cnn.add_module(f"pooling{n_pool}", MaxPool2d(kernel, stride, pad))
            n_pool += 1
    return cnn


@RECOGNIZERS.register("crnn")
class CRNN(nn.Module):
    """CRNN recognizer: images (B, C>=3, H, W) in [0, 1] -> CTC logits (T=26, B, 37).

    Options: ``hidden_units`` (LSTM size, 256 in crnn.pth), ``alphabet`` (class i is
    ``alphabet[i-1]``, 0 is the CTC blank), ``leaky_relu`` (meijieru's option, off in crnn.pth),
    ``cnn_width`` (the first convolution's channels, 64 in crnn.pth; the others scale with it:
    a small CPU-sized CRNN for the mini study, trained from scratch).
    """

    ctc = True  # CTC logits (T, B, K), class 0 blank: heads and the CTC loss apply

    def __init__(
        self,
        hidden_units: PositiveInt = 256,
        alphabet: str = VOCABULARIES["lower"],
        leaky_relu: bool = False,
        cnn_width: PositiveInt = 64,
    ):
        super().__init__()
        self.alphabet = alphabet
        self.num_classes = len(alphabet) + 1
        self.feature_dim = 2 * hidden_units
        self.cnn = _cnn(1, leaky_relu, cnn_width)
        self.rnn = nn.Sequential(
            BidirectionalLSTM(8 * cnn_width, hidden_units, hidden_units),
            BidirectionalLSTM(hidden_units, hidden_units, self.num_classes),
        )

    @property
    def classifier(self) -> nn.Module:
        """The layer a head replaces: (T, B, feature_dim) -> (T, B, num_classes)."""
        return self.rnn[1].embedding

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """TextZoom's CRNN input: RGB channels, bicubic to 32x100, grayscale, left in [0, 1]."""
        rgb = F.interpolate(images[:, :3], INPUT_SIZE, mode="bicubic", align_corners=False)
        r, g, b = rgb.unbind(1)
        return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Sequence features (T, B, feature_dim): everything before ``classifier``."""
        conv = self.cnn(self.prepare(images))  # (B, 512, 1, 26)
        seq = conv.squeeze(2).permute(2, 0, 1)  # (T, B, 512)
        return self.rnn[1].rnn(self.rnn[0](seq))[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encode(images))

    def decode(self, logits: torch.Tensor) -> list[str]:
        """Greedy CTC decoding of (T, B, K) logits into strings."""
        return ctc_greedy_decode(logits, self.alphabet)

    def recognize(self, images: torch.Tensor) -> Recognition:
        """TextZoom's CRNN evaluation: greedy CTC decoding (see tsrx.models.recognition)."""
        return ctc_greedy_recognize(self(images), self.alphabet)


@CHECKPOINT_FORMATS.register("crnn")
def read_crnn(obj) -> OfficialCheckpoint | None:
    """meijieru/crnn.pytorch's bare state_dict (``crnn.pth``, as TextZoom loads it)."""
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        return None
    state = strip_module_prefix(obj)
    if "cnn.conv0.weight" not in state or not any(k.startswith("rnn.0.rnn.") for k in state):
        return None
    classes = (
        state["rnn.1.embedding.weight"].shape[0] if "rnn.1.embedding.weight" in state else None
    )
    hidden = state["rnn.0.rnn.weight_hh_l0"].shape[1] if "rnn.0.rnn.weight_hh_l0" in state else 256
    table: dict = {"type": "crnn", "hidden_units": int(hidden)}
    if classes is not None and classes != len(VOCABULARIES["lower"]) + 1:
        fits = [name for name, chars in VOCABULARIES.items() if len(chars) + 1 == classes]
        if fits:
            table["alphabet"] = VOCABULARIES[fits[0]]
    return OfficialCheckpoint(
        "crnn",
        {"recognizer": table},
        OrderedDict((f"recognizer.{k}", v) for k, v in state.items()),
        {"classes": classes},
    )
