"""MORAN (Luo et al., Pattern Recognition 2019) as TextZoom's ``src/model/moran/`` builds it.

Structure and state_dict keys follow TextZoom's ``MORAN(1, 37, 256, 32, 100,
BidirDecoder=True)`` (from Canjie-Luo/MORAN_v2), so the published ``moran.pth``, saved from
DataParallel (``module.MORN...``, ``module.ASRN...``), loads unchanged:

- ``MORN``: the rectifier; ``MORN.cnn`` (Sequential: max-pool, five conv+BN, ReLU between,
  the last conv giving one offset map) predicts vertical offsets, applied by ``grid_sample``;
- ``ASRN.cnn``: a ResNet (``block0`` conv+BN, ``block1``-``block5`` of 3/4/6/6/3 residual
  blocks, stride 2, 2, (2,1), (2,1), (2,1)) giving (B, 512, 1, 25);
- ``ASRN.rnn``: two bidirectional LSTMs with a linear layer each (nh = 256);
- ``ASRN.attentionL2R`` / ``ASRN.attentionR2L``: attention GRU decoders (``char_embeddings``
  (38, 256) with row 0 the start token, ``attention_cell.{i2h,h2h,score,rnn}``, ``generator``).

Classes: ``0-9a-z`` and ``$`` (end of word), 37. Evaluation as TextZoom's
``parse_moran_data`` and test loop: RGB bicubic to 32x100, gray 0.299R + 0.587G + 0.114B
(left in [0, 1]); MORN with its one test-time refinement; the left-to-right decoder run
greedily for 20 steps; the string cut at the first ``$``. ``grid_sample`` uses
``align_corners=True``, the behaviour of the PyTorch versions MORAN was written for.
"""

from __future__ import annotations

import string
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tsrx.checkpoint import OfficialCheckpoint
from tsrx.errors import TsrxError
from tsrx.models.recognition import Recognition
from tsrx.registry import CHECKPOINT_FORMATS, RECOGNIZERS
from tsrx_builtin.maxpool import MaxPool2d
from tsrx_builtin.recognizer_weights import describe_checkpoint, load_strictly, marked_state

ALPHABET = string.digits + string.ascii_lowercase + "$"  # TextZoom's alphabet_moran
END = "$"
INPUT_SIZE = (32, 100)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
TEST_STEPS = 20  # parse_moran_data's max_iter


class MORN(nn.Module):
    """Multi-object rectification network: predicts per-pixel vertical offsets and resamples."""

    def __init__(self, nc: int = 1, target_h: int = 32, target_w: int = 100):
        super().__init__()
        self.target_h, self.target_w = target_h, target_w
        self.cnn = nn.Sequential(
            MaxPool2d(2, 2),
            nn.Conv2d(nc, 64, 3, 1, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(True),
            MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 3, 1, 1),
            nn.BatchNorm2d(128),
            nn.ReLU(True),
            MaxPool2d(2, 2),
            nn.Conv2d(128, 64, 3, 1, 1),
            nn.BatchNorm2d(64),
            nn.ReLU(True),
            nn.Conv2d(64, 16, 3, 1, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(True),
            nn.Conv2d(16, 1, 3, 1, 1),
            nn.BatchNorm2d(1),
        )
        self.pool = MaxPool2d(2, 1)
        # the identity sampling grid in [-1, 1], (1, H, W, 2) as (x, y); computed in float64
        h = np.arange(target_h) * 2.0 / (target_h - 1) - 1
        w = np.arange(target_w) * 2.0 / (target_w - 1) - 1
        grid = np.stack(np.meshgrid(w, h, indexing="ij"), axis=-1).transpose(1, 0, 2)
        self.register_buffer("grid", torch.from_numpy(grid[None]).float(), persistent=False)

    def _offsets(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        offsets = self.cnn(x)
        pooled = self.pool(F.relu(offsets)) - self.pool(F.relu(-offsets))
        return F.grid_sample(pooled, grid, align_corners=True).permute(0, 2, 3, 1).contiguous()

    def forward(self, x: torch.Tensor, refine: int = 1) -> torch.Tensor:
        """Rectify ``x``; ``refine`` extra offset passes (1 at test time, 0 in training)."""
        small = F.interpolate(
            x, (self.target_h, self.target_w), mode="bilinear", align_corners=False
        )
        grid = self.grid.expand(x.size(0), -1, -1, -1)
        grid_x, grid_y = grid[..., :1], grid[..., 1:]
        offsets = self._offsets(small, grid)
        rectified = F.grid_sample(x, torch.cat([grid_x, grid_y + offsets], 3), align_corners=True)
        for _ in range(refine):
            offsets = offsets + self._offsets(rectified, grid)
            rectified = F.grid_sample(
                x, torch.cat([grid_x, grid_y + offsets], 3), align_corners=True
            )
        return rectified


class BidirectionalLSTM(nn.Module):
    def __init__(self, n_in: int, n_hidden: int, n_out: int):
        super().__init__()
        self.rnn = nn.LSTM(n_in, n_hidden, bidirectional=True)
        self.embedding = nn.Linear(n_hidden * 2, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rec = self.rnn(x)[0]
        t, b, h = rec.size()
        return self.embedding(rec.view(t * b, h)).view(t, b, -1)


class ResidualBlock(nn.Module):
    """conv1 (3x3 with the stride, or 1x1) + BN, conv2 3x3 + BN, residual, ReLU (no ReLU
    between the two convolutions, as in MORAN's asrn_res.py)."""

    def __init__(self, c_in: int, c_out: int, stride):
        super().__init__()
        first = stride[0] if isinstance(stride, tuple) else stride
        self.downsample = None
        if first > 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out, momentum=0.01)
            )
            self.conv1 = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out, momentum=0.01)
            )
        else:
            self.conv1 = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, 0), nn.BatchNorm2d(c_out, momentum=0.01)
            )
        self.conv2 = nn.Sequential(
            nn.Conv2d(c_out, c_out, 3, 1, 1), nn.BatchNorm2d(c_out, momentum=0.01)
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(residual + out)


class ResNet(nn.Module):
    def __init__(self, c_in: int):
        super().__init__()
        self.block0 = nn.Sequential(nn.Conv2d(c_in, 32, 3, 1, 1), nn.BatchNorm2d(32, momentum=0.01))
        self.block1 = self._make_layer(32, 32, 2, 3)
        self.block2 = self._make_layer(32, 64, 2, 4)
        self.block3 = self._make_layer(64, 128, (2, 1), 6)
        self.block4 = self._make_layer(128, 256, (2, 1), 6)
        self.block5 = self._make_layer(256, 512, (2, 1), 3)

    @staticmethod
    def _make_layer(c_in: int, c_out: int, stride, repeat: int) -> nn.Sequential:
        return nn.Sequential(
            ResidualBlock(c_in, c_out, stride),
            *[ResidualBlock(c_out, c_out, 1) for _ in range(repeat - 1)],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in (self.block0, self.block1, self.block2, self.block3, self.block4, self.block5):
            x = block(x)
        return x


class AttentionCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_embeddings: int):
        super().__init__()
        self.i2h = nn.Linear(input_size, hidden_size, bias=False)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.rnn = nn.GRUCell(input_size + num_embeddings, hidden_size)
        self.hidden_size = hidden_size

    def forward(self, prev_hidden, feats, embeddings, frac_pickup: bool = False):
        n_t, n_b, n_c = feats.size()
        hs = self.hidden_size
        feats_proj = self.i2h(feats.view(-1, n_c))
        hidden_proj = self.h2h(prev_hidden).view(1, n_b, hs).expand(n_t, n_b, hs).contiguous()
        emission = self.score(torch.tanh(feats_proj + hidden_proj.view(-1, hs)).view(-1, hs))
        alpha = F.softmax(emission.view(n_t, n_b), 0)
        if frac_pickup:
            alpha = _frac_pickup(alpha)
        context = (feats * alpha.view(n_t, n_b, 1).expand(n_t, n_b, n_c)).sum(0)
        return self.rnn(torch.cat([context, embeddings], 1), prev_hidden)


def _frac_pickup(alpha: torch.Tensor) -> torch.Tensor:
    """MORAN's training-time fractional pickup: two neighbouring attention weights at a
    random position are mixed (resampled at shifted positions), with torch's RNG."""
    n_t = alpha.size(0)
    idx = int(torch.rand(()) * n_t)
    if idx <= 0 or idx >= n_t - 1:
        return alpha
    w = torch.arange(n_t, dtype=torch.float64) * 2.0 / (n_t - 1) - 1
    beta = float(torch.rand(())) / 4.0
    v0 = beta * w[idx] + (1 - beta) * w[idx - 1]
    v1 = beta * w[idx - 1] + (1 - beta) * w[idx]
    w[idx - 1], w[idx] = v0, v1
    grid = torch.stack([w, torch.ones_like(w)], -1).view(1, 1, n_t, 2).float().to(alpha.device)
    rows = alpha.transpose(0, 1).unsqueeze(1).unsqueeze(2)  # (B, 1, 1, T)
    picked = F.grid_sample(rows, grid.expand(rows.size(0), -1, -1, -1), align_corners=True)
    return picked.view(-1, n_t).transpose(0, 1)


class Attention(nn.Module):
    """Attention decoder; ``char_embeddings`` row 0 is the start token, row c+1 class c."""

    def __init__(
        self, input_size: int, hidden_size: int, num_classes: int, num_embeddings: int = 256
    ):
        super().__init__()
        self.attention_cell = AttentionCell(input_size, hidden_size, num_embeddings)
        self.generator = nn.Linear(hidden_size, num_classes)
        self.char_embeddings = nn.Parameter(torch.randn(num_classes + 1, num_embeddings))
        self.hidden_size, self.num_classes = hidden_size, num_classes

    def greedy(self, feats: torch.Tensor, steps: int) -> torch.Tensor:
        """Test mode: (B, steps, num_classes) logits, each step fed the previous argmax."""
        n_b = feats.size(1)
        hidden = feats.new_zeros(n_b, self.hidden_size)
        prev = torch.zeros(n_b, dtype=torch.long, device=feats.device)
        out = []
        for _ in range(steps):
            hidden = self.attention_cell(hidden, feats, self.char_embeddings.index_select(0, prev))
            logits = self.generator(hidden)
            out.append(logits)
            prev = logits.max(1)[1] + 1
        return torch.stack(out, 1)

    def teacher_forced(
        self, feats: torch.Tensor, targets: torch.Tensor, frac_pickup: bool = False
    ) -> torch.Tensor:
        """Training mode: (B, steps, num_classes) logits; step i reads the embedding of class
        ``targets[:, i-1]`` (the start token at step 0)."""
        n_b, steps = targets.shape
        inputs = torch.cat([targets.new_zeros(n_b, 1), targets[:, :-1] + 1], 1)
        hidden = feats.new_zeros(n_b, self.hidden_size)
        hiddens = []
        for i in range(steps):
            emb = self.char_embeddings.index_select(0, inputs[:, i])
            hidden = self.attention_cell(hidden, feats, emb, frac_pickup)
            hiddens.append(hidden)
        return self.generator(torch.stack(hiddens, 1))


class ASRN(nn.Module):
    """Attention-based sequence recognition network with the bidirectional decoder."""

    def __init__(self, nc: int = 1, nclass: int = 37, nh: int = 256):
        super().__init__()
        self.cnn = ResNet(nc)
        self.rnn = nn.Sequential(BidirectionalLSTM(512, nh, nh), BidirectionalLSTM(nh, nh, nh))
        self.attentionL2R = Attention(nh, nh, nclass, 256)
        self.attentionR2L = Attention(nh, nh, nclass, 256)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", a=0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(T=25, B, nh) sequence features."""
        conv = self.cnn(x)
        if conv.size(2) != 1:
            raise TsrxError(
                f"MORAN: the CNN output height is {conv.size(2)}, expected 1 "
                "(input height must be 32)"
            )
        return self.rnn(conv.squeeze(2).permute(2, 0, 1).contiguous())


@RECOGNIZERS.register("moran")
class Moran(nn.Module):
    """MORAN recognizer (attention decoders, ``ctc = False``); see the module docstring.

    Options: ``hidden_units`` (nh, 256 in moran.pth), ``augment`` (MORAN's training-time
    randomness in ``loss``: MORN skipped for half the batches, fractional pickup; on as
    MORAN trains, off for a deterministic loss).
    """

    ctc = False  # attention decoders: no CTC logits, heads do not apply

    def __init__(self, hidden_units: int = 256, augment: bool = True):
        super().__init__()
        self.alphabet = ALPHABET[:-1]  # what it outputs; '$' only ends a word
        self.num_classes = len(ALPHABET)
        self.augment = augment
        self.MORN = MORN(1, *INPUT_SIZE)
        self.ASRN = ASRN(1, self.num_classes, hidden_units)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """parse_moran_data: RGB bicubic to 32x100, gray 0.299R + 0.587G + 0.114B, in [0, 1]."""
        rgb = F.interpolate(images[:, :3], INPUT_SIZE, mode="bicubic", align_corners=False)
        r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
        return GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b

    def logits(self, images: torch.Tensor, steps: int = TEST_STEPS) -> torch.Tensor:
        """The test loop's left-to-right decoder logits (B, steps, 37)."""
        feats = self.ASRN.features(self.MORN(self.prepare(images), refine=1))
        return self.ASRN.attentionL2R.greedy(feats, steps)

    def recognize(self, images: torch.Tensor) -> Recognition:
        """Argmax of each of the 20 steps, the string cut at the first '$'; per-char softmax."""
        probs = torch.softmax(self.logits(images).float(), dim=2)
        conf, best = probs.max(dim=2)
        texts, scores = [], []
        for row, row_conf in zip(best.tolist(), conf.tolist()):
            chars = "".join(ALPHABET[i] for i in row)
            cut = chars.split(END)[0]
            texts.append(cut)
            scores.append(row_conf[: len(cut)])
        return Recognition(texts, scores)

    def encode_labels(self, labels: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """MORAN's dataset + converter: characters outside 0-9a-z dropped (case ignored),
        '$' appended; the reversed word (then '$') for the right-to-left decoder. Padded
        with '$' to the longest; lengths include the '$'."""
        index = {c: i for i, c in enumerate(ALPHABET)}
        words = ["".join(c for c in label.lower() if c in index and c != END) for label in labels]
        lengths = [len(w) + 1 for w in words]
        width = max(lengths)
        pad = index[END]

        def rows(ws):
            return torch.tensor(
                [[index[c] for c in w + END] + [pad] * (width - len(w) - 1) for w in ws],
                dtype=torch.long,
            )

        return rows(words), rows([w[::-1] for w in words]), lengths

    def loss(self, images: torch.Tensor, labels: list[str]) -> torch.Tensor:
        """MORAN_v2's training objective: cross-entropy (mean over characters, '$' included)
        of both decoders, teacher-forced. MORN runs without its test-time refinement; with
        ``augment``, MORAN_v2's randomness: half the batches skip MORN, and the attention
        weights get a fractional pickup."""
        targets, targets_rev, lengths = self.encode_labels(labels)
        targets, targets_rev = targets.to(images.device), targets_rev.to(images.device)
        x = self.prepare(images)
        augment = self.augment and self.training
        if not (augment and bool(torch.rand(()) > 0.5)):
            x = self.MORN(x, refine=0)
        else:  # MORN skipped: its parameters still join the graph, with zero gradients,
            # because DDP expects a gradient for every parameter at every step
            x = x + 0.0 * sum(p.sum() for p in self.MORN.parameters())
        feats = self.ASRN.features(x)
        mask = torch.arange(targets.size(1), device=images.device).unsqueeze(0) < torch.tensor(
            lengths, device=images.device
        ).unsqueeze(1)
        l2r = self.ASRN.attentionL2R.teacher_forced(feats, targets, augment)[mask]
        r2l = self.ASRN.attentionR2L.teacher_forced(feats, targets_rev, augment)[mask]
        return F.cross_entropy(
            torch.cat([l2r, r2l], 0).float(), torch.cat([targets[mask], targets_rev[mask]], 0)
        )

    def load_official(self, obj: Any, source: str = "checkpoint") -> None:
        """Load MORAN_v2 weights (``moran.pth``, ``module.`` prefixes allowed), strictly."""
        state = moran_state_dict(obj, source)
        _check_classes(state, source)
        load_strictly(self, state, source, "MORAN")


# -- official checkpoints ----------------------------------------------------------------
MORAN_MARKERS = (
    "MORN.cnn.1.weight",
    "ASRN.cnn.block0.0.weight",
    "ASRN.attentionL2R.char_embeddings",
)


def moran_state_dict(obj: Any, source: str = "checkpoint") -> OrderedDict[str, torch.Tensor]:
    """The MORAN weights of ``obj`` (``module.`` dropped), or a TsrxError naming what it is."""
    state = marked_state(obj, MORAN_MARKERS)
    if state is not None:
        return state
    raise TsrxError(
        f"{source}: expected a MORAN checkpoint (a state_dict with "
        f"{', '.join(MORAN_MARKERS)}, 'module.' prefixes allowed), got "
        f"{describe_checkpoint(obj)}"
    )


def _check_classes(state: Mapping[str, torch.Tensor], where: str) -> int:
    gen = state.get("ASRN.attentionL2R.generator.weight")
    if gen is None:
        raise TsrxError(f"{where}: ASRN.attentionL2R.generator.weight is missing")
    classes = int(gen.shape[0])
    if classes != len(ALPHABET):
        raise TsrxError(
            f"{where}: {classes} output classes; TextZoom's MORAN reads "
            f"{len(ALPHABET)} (0-9, a-z and '$')"
        )
    if "ASRN.attentionR2L.generator.weight" not in state:
        raise TsrxError(
            f"{where}: no ASRN.attentionR2L weights; TextZoom's MORAN uses the "
            "bidirectional decoder (BidirDecoder=True)"
        )
    return classes


@CHECKPOINT_FORMATS.register("moran")
def read_moran(obj: Any) -> OfficialCheckpoint | None:
    """MORAN_v2's bare state_dict (``moran.pth``, saved from DataParallel)."""
    state = marked_state(obj, MORAN_MARKERS, tensors_only=True)
    if state is None:
        return None
    classes = _check_classes(state, "MORAN checkpoint")
    hidden = (
        int(state["ASRN.rnn.0.rnn.weight_hh_l0"].shape[1])
        if "ASRN.rnn.0.rnn.weight_hh_l0" in state
        else 256
    )
    table: dict = {"type": "moran"}
    if hidden != 256:
        table["hidden_units"] = hidden
    return OfficialCheckpoint(
        "moran",
        {"recognizer": table},
        OrderedDict((f"recognizer.{k}", v) for k, v in state.items()),
        {"classes": classes, "hidden_units": hidden},
    )
