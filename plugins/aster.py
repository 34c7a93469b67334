"""ASTER (Shi et al., TPAMI 2018) as TextZoom's ``src/model/recognizer/`` builds it.

Structure and state_dict keys follow TextZoom's ``RecognizerBuilder(arch='ResNet_ASTER',
rec_num_classes, sDim=512, attDim=512, max_len_labels=100, STN_ON=True)`` (taken from
aster.pytorch), so the published ``demo.pth.tar`` (``{'state_dict': ...}``) loads with no key
left over:

- ``stn_head``: six conv3x3+BN+ReLU blocks (``stn_convnet.0`` ... ``.10``, max-pools between),
  ``stn_fc1`` (Linear 512 + BatchNorm1d + ReLU), ``stn_fc2`` (20 control points x 2), reading
  the image resized to 32x64 (bilinear, corners aligned);
- ``tps``: thin-plate-spline sampler, 20 control points, margins 0.05, output 32x100; its
  precomputed matrices are buffers (``tps.inverse_kernel``...), saved in the checkpoint too;
- ``encoder``: ResNet-ASTER (``layer0`` conv, ``layer1``-``layer5`` of 3/4/6/6/3 blocks) and a
  2-layer bidirectional LSTM (``encoder.rnn``), giving (B, 25, 512) features;
- ``decoder.decoder``: the attention GRU decoder (``attention_unit.{sEmbed,xEmbed,wEmbed}``,
  ``tgt_embedding`` with one extra row for <BOS>, ``gru``, ``fc``).

Classes: the vocabulary (TextZoom's ``get_vocabulary``) followed by EOS, PADDING, UNKNOWN;
``all`` (94 + 3 = 97) is the published model's, ``lower`` gives 39.

Evaluation as TextZoom's ``parse_aster_data`` + eval-mode ``forward``: RGB at 32x128 scaled
to [-1, 1]; beam search of width 5 over 100 steps; the best beam read up to EOS with UNKNOWN
(and PADDING) dropped (``get_str_list``). The samplers use ``align_corners=True``, the
behaviour of ``grid_sample`` in the PyTorch versions the reference was written for.
"""

from __future__ import annotations

import itertools
import string
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.checkpoint import OfficialCheckpoint
from tsrx.errors import TsrxError
from tsrx.models.recognition import Recognition
from tsrx.registry import CHECKPOINT_FORMATS, RECOGNIZERS
from tsrx_builtin.beam_search import beam_search
from tsrx_builtin.maxpool import MaxPool2d
from tsrx_builtin.recognizer_weights import describe_checkpoint, load_strictly, marked_state

# TextZoom src/utils/labelmaps.py get_vocabulary: characters, then the three special tokens.
ASTER_VOCABULARIES = {
    "digit": string.digits,
    "lower": string.digits + string.ascii_lowercase,
    "upper": string.digits + string.ascii_letters,
    "all": string.digits + string.ascii_letters + string.punctuation,
}
SPECIAL_TOKENS = ("EOS", "PADDING", "UNKNOWN")
INPUT_SIZE = (32, 128)  # parse_aster_data reads TextZoom's 32x128 images
STN_INPUT_SIZE = (32, 64)  # recognizer_builder.tps_inputsize
TPS_OUTPUT_SIZE = (32, 100)  # recognizer_builder.tps_outputsize
NUM_CONTROL_POINTS = 20
TPS_MARGINS = (0.05, 0.05)
BEAM_WIDTH = 5
MAX_LEN = 100


def voc_type_for_classes(num_classes: int, where: str = "ASTER checkpoint") -> str:
    """The vocabulary whose size + 3 special tokens is ``num_classes`` (a clear error if none)."""
    for name, chars in ASTER_VOCABULARIES.items():
        if len(chars) + len(SPECIAL_TOKENS) == num_classes:
            return name
    sizes = ", ".join(f"{n} = {len(c) + 3}" for n, c in ASTER_VOCABULARIES.items())
    raise TsrxError(
        f"{where}: {num_classes} output classes fit no ASTER vocabulary "
        f"(characters + EOS, PADDING, UNKNOWN: {sizes})"
    )


# -- rectification -----------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class STNHead(nn.Module):
    """Localisation network: a 32x64 image -> 20 (x, y) control points in [0, 1] (unclamped)."""

    def __init__(self, in_planes: int = 3, num_ctrlpoints: int = NUM_CONTROL_POINTS):
        super().__init__()
        self.num_ctrlpoints = num_ctrlpoints
        widths = [32, 64, 128, 256, 256, 256]
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            layers.append(_conv_bn_relu(in_planes if i == 0 else widths[i - 1], w))
            if i < len(widths) - 1:
                layers.append(MaxPool2d(2, 2))
        self.stn_convnet = nn.Sequential(*layers)
        self.stn_fc1 = nn.Sequential(
            nn.Linear(2 * 256, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True)
        )
        self.stn_fc2 = nn.Linear(512, num_ctrlpoints * 2)
        # Identity-like start (aster.pytorch init_stn): zero weights, bias = control points
        # on the top and bottom edges at margin 0.01.
        nn.init.zeros_(self.stn_fc2.weight)
        with torch.no_grad():
            self.stn_fc2.bias.copy_(_edge_points(num_ctrlpoints, (0.01, 0.01)).view(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stn_convnet(x)
        x = self.stn_fc1(x.view(x.size(0), -1))
        return self.stn_fc2(0.1 * x).view(-1, self.num_ctrlpoints, 2)


def _edge_points(n: int, margins: tuple[float, float]) -> torch.Tensor:
    """n/2 evenly spaced (x, y) points along the top edge, then n/2 along the bottom edge."""
    import numpy as np

    mx, my = margins
    xs = np.linspace(mx, 1.0 - mx, n // 2)
    top = np.stack([xs, np.full(n // 2, my)], axis=1)
    bottom = np.stack([xs, np.full(n // 2, 1.0 - my)], axis=1)
    return torch.tensor(np.concatenate([top, bottom], axis=0), dtype=torch.float32)


def _tps_kernel(points: torch.Tensor, ctrl: torch.Tensor) -> torch.Tensor:
    """U(r) = r^2 log r written as 0.5 * d log d with d = r^2 (0 where d = 0)."""
    diff = points.view(-1, 1, 2) - ctrl.view(1, -1, 2)
    sq = diff * diff
    dist = sq[:, :, 0] + sq[:, :, 1]
    out = 0.5 * dist * torch.log(dist)
    return out.masked_fill(out != out, 0)


class TPSSpatialTransformer(nn.Module):
    """Thin-plate-spline sampler: warps the input so its control points land on fixed ones."""

    def __init__(
        self,
        output_image_size=TPS_OUTPUT_SIZE,
        num_control_points=NUM_CONTROL_POINTS,
        margins=TPS_MARGINS,
    ):
        super().__init__()
        self.num_control_points = n = num_control_points
        self.target_height, self.target_width = output_image_size
        target = _edge_points(n, margins)
        forward_kernel = torch.zeros(n + 3, n + 3)
        forward_kernel[:n, :n] = _tps_kernel(target, target)
        forward_kernel[:n, -3] = 1
        forward_kernel[-3, :n] = 1
        forward_kernel[:n, -2:] = target
        forward_kernel[-2:, :n] = target.t()
        h, w = output_image_size
        yx = torch.tensor(list(itertools.product(range(h), range(w))), dtype=torch.float32)
        y, x = yx.split(1, dim=1)
        coords = torch.cat([x / (w - 1), y / (h - 1)], dim=1)  # (HW, 2) as (x, y)
        coords_repr = torch.cat([_tps_kernel(coords, target), torch.ones(h * w, 1), coords], 1)
        self.register_buffer("inverse_kernel", torch.inverse(forward_kernel))
        self.register_buffer("padding_matrix", torch.zeros(3, 2))
        self.register_buffer("target_coordinate_repr", coords_repr)
        self.register_buffer("target_control_points", target)

    def forward(self, images: torch.Tensor, source_points: torch.Tensor) -> torch.Tensor:
        b = source_points.size(0)
        y = torch.cat([source_points, self.padding_matrix.expand(b, 3, 2)], 1)
        mapping = torch.matmul(self.inverse_kernel, y)
        source = torch.matmul(self.target_coordinate_repr, mapping)
        grid = source.view(-1, self.target_height, self.target_width, 2).clamp(0, 1)
        return F.grid_sample(images, 2.0 * grid - 1.0, align_corners=True)


# -- encoder -----------------------------------------------------------------------------
class AsterBlock(nn.Module):
    """1x1 conv (carries the stride) + 3x3 conv, each with batch norm, residual connection."""

    def __init__(self, inplanes: int, planes: int, stride=1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNetAster(nn.Module):
    """ResNet-ASTER: (B, 3, 32, 100) -> (B, 25, 512) bidirectional-LSTM features."""

    def __init__(self):
        super().__init__()
        self.layer0 = nn.Sequential(
            nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)
        )
        self.inplanes = 32
        self.layer1 = self._make_layer(32, 3, [2, 2])
        self.layer2 = self._make_layer(64, 4, [2, 2])
        self.layer3 = self._make_layer(128, 6, [2, 1])
        self.layer4 = self._make_layer(256, 6, [2, 1])
        self.layer5 = self._make_layer(512, 3, [2, 1])
        self.rnn = nn.LSTM(512, 256, bidirectional=True, num_layers=2, batch_first=True)
        self.out_planes = 512
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride) -> nn.Sequential:
        downsample = None
        if stride != [1, 1] or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [AsterBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [AsterBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.layer0, self.layer1, self.layer2, self.layer3, self.layer4, self.layer5):
            x = layer(x)
        seq = x.squeeze(2).transpose(2, 1)  # (B, W, C)
        return self.rnn(seq)[0]


# -- decoder -----------------------------------------------------------------------------
class AttentionUnit(nn.Module):
    """Additive attention of the decoder state over the encoder features."""

    def __init__(self, s_dim: int, x_dim: int, att_dim: int):
        super().__init__()
        self.x_dim, self.att_dim = x_dim, att_dim
        self.sEmbed = nn.Linear(s_dim, att_dim)
        self.xEmbed = nn.Linear(x_dim, att_dim)
        self.wEmbed = nn.Linear(att_dim, 1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The features' projection, the same at every step (computed once per word)."""
        b, t, _ = x.size()
        return self.xEmbed(x.contiguous().view(-1, self.x_dim)).view(b, t, -1)

    def forward(
        self, x: torch.Tensor, s_prev: torch.Tensor, x_proj: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, t, _ = x.size()
        if x_proj is None:
            x_proj = self.project(x)
        s_proj = self.sEmbed(s_prev.squeeze(0)).unsqueeze(1).expand(b, t, self.att_dim)
        v = self.wEmbed(torch.tanh(s_proj + x_proj).view(-1, self.att_dim)).view(b, t)
        return F.softmax(v, dim=1)


class DecoderUnit(nn.Module):
    """One decoding step: attend, embed the previous symbol, GRU, classify."""

    def __init__(self, s_dim: int, x_dim: int, y_dim: int, att_dim: int):
        super().__init__()
        self.attention_unit = AttentionUnit(s_dim, x_dim, att_dim)
        self.tgt_embedding = nn.Embedding(y_dim + 1, att_dim)  # last row: <BOS>
        self.gru = nn.GRU(input_size=x_dim + att_dim, hidden_size=s_dim, batch_first=True)
        self.fc = nn.Linear(s_dim, y_dim)

    def forward(
        self,
        x: torch.Tensor,
        s_prev: torch.Tensor,
        y_prev: torch.Tensor,
        x_proj: torch.Tensor | None = None,
    ):
        alpha = self.attention_unit(x, s_prev, x_proj)
        context = torch.bmm(alpha.unsqueeze(1), x).squeeze(1)
        y_proj = self.tgt_embedding(y_prev.long())
        output, state = self.gru(torch.cat([y_proj, context], 1).unsqueeze(1), s_prev)
        return self.fc(output.squeeze(1)), state


class AttentionRecognitionHead(nn.Module):
    """Holds the decoder unit (hence the ``decoder.decoder.*`` keys of the checkpoint)."""

    def __init__(
        self, num_classes: int, in_planes: int, s_dim: int, att_dim: int, max_len_labels: int
    ):
        super().__init__()
        self.num_classes, self.s_dim, self.max_len_labels = num_classes, s_dim, max_len_labels
        self.decoder = DecoderUnit(s_dim, in_planes, num_classes, att_dim)

    def forward(self, x: torch.Tensor, targets: torch.Tensor, steps: int) -> torch.Tensor:
        """Teacher forcing: (B, steps, num_classes) logits, <BOS> then ``targets[:, :-1]``."""
        b = x.size(0)
        state = x.new_zeros(1, b, self.s_dim)
        y_prev = torch.full((b,), self.num_classes, dtype=torch.long, device=x.device)
        outputs = []
        x_proj = self.decoder.attention_unit.project(x)
        for i in range(steps):
            if i > 0:
                y_prev = targets[:, i - 1]
            output, state = self.decoder(x, state, y_prev, x_proj)
            outputs.append(output.unsqueeze(1))
        return torch.cat(outputs, 1)

    def beam_search(
        self,
        x: torch.Tensor,
        beam_width: int,
        eos: int,
        stop_early: bool = True,
        rows_leave: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference beam search over this head's decoder (``beam_search.py``)."""
        return beam_search(self, x, beam_width, eos, stop_early, rows_leave)


# -- the recognizer ----------------------------------------------------------------------
@RECOGNIZERS.register("aster")
class Aster(nn.Module):
    """ASTER recognizer (attention decoder, ``ctc = False``); see the module docstring.

    Options: ``voc_type`` (``all``: the published checkpoint's 97 classes; ``lower``,
    ``upper``, ``digit``), ``max_len`` (decoding steps, 100), ``beam_width`` (5).
    """

    ctc = False  # attention decoder: no CTC logits, heads do not apply

    def __init__(
        self,
        voc_type: str = "all",
        max_len: int = MAX_LEN,
        beam_width: int = BEAM_WIDTH,
        s_dim: int = 512,
        att_dim: int = 512,
    ):
        super().__init__()
        if voc_type not in ASTER_VOCABULARIES:
            raise TsrxError(
                f"model.recognizer.voc_type: expected one of "
                f"{', '.join(ASTER_VOCABULARIES)}, got {voc_type!r}"
            )
        self.voc_type = voc_type
        self.alphabet = ASTER_VOCABULARIES[voc_type]
        self.num_classes = len(self.alphabet) + len(SPECIAL_TOKENS)
        self.eos, self.padding, self.unknown = range(len(self.alphabet), self.num_classes)
        self.beam_width = beam_width
        self.encoder = ResNetAster()
        self.decoder = AttentionRecognitionHead(
            self.num_classes, self.encoder.out_planes, s_dim, att_dim, max_len
        )
        self.tps = TPSSpatialTransformer()
        self.stn_head = STNHead()

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """parse_aster_data: RGB at 32x128 (bicubic if another size), scaled to [-1, 1]."""
        rgb = images[:, :3]
        if tuple(rgb.shape[-2:]) != INPUT_SIZE:
            rgb = F.interpolate(rgb, INPUT_SIZE, mode="bicubic", align_corners=False)
        return rgb * 2 - 1

    def rectify(self, x: torch.Tensor) -> torch.Tensor:
        """TPS rectification of a prepared image: (B, 3, 32, 128) -> (B, 3, 32, 100)."""
        stn_input = F.interpolate(x, STN_INPUT_SIZE, mode="bilinear", align_corners=True)
        return self.tps(x, self.stn_head(stn_input))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, 25, 512) of images in [0, 1]."""
        return self.encoder(self.rectify(self.prepare(images))).contiguous()

    def encode_labels(self, labels: list[str]) -> tuple[torch.Tensor, list[int]]:
        """aster.pytorch's targets: ids + EOS, PADDING after; lengths count the EOS.

        The ``lower`` vocabulary reads labels lower-cased; characters outside the vocabulary
        become UNKNOWN; labels are cut to ``max_len - 1`` characters.
        """
        index = {ch: i for i, ch in enumerate(self.alphabet)}
        limit = self.decoder.max_len_labels
        rows, lengths = [], []
        for label in labels:
            if self.voc_type == "lower":
                label = label.lower()
            ids = [index.get(ch, self.unknown) for ch in label][: limit - 1] + [self.eos]
            lengths.append(len(ids))
            rows.append(ids + [self.padding] * (limit - len(ids)))
        return torch.tensor(rows, dtype=torch.long), lengths

    def teacher_forced_logits(self, images: torch.Tensor, targets: torch.Tensor, steps: int):
        return self.decoder(self.encode(images), targets.to(images.device), steps)

    def loss(self, images: torch.Tensor, labels: list[str]) -> torch.Tensor:
        """SequenceCrossEntropyLoss as aster.pytorch trains: the summed negative
        log-likelihood of each label (EOS included) averaged over the batch."""
        targets, lengths = self.encode_labels(labels)
        steps = max(lengths)
        logits = self.teacher_forced_logits(images, targets, steps)
        targets = targets[:, :steps].to(logits.device)
        mask = (
            torch.arange(steps, device=logits.device).unsqueeze(0)
            < torch.tensor(lengths, device=logits.device).unsqueeze(1)
        ).float()
        log_probs = F.log_softmax(logits.reshape(-1, logits.size(2)).float(), dim=1)
        nll = -log_probs.gather(1, targets.reshape(-1, 1)) * mask.reshape(-1, 1)
        return nll.sum() / len(labels)

    def decode_ids(self, ids: torch.Tensor, logp: torch.Tensor | None = None) -> Recognition:
        """get_str_list: symbols up to the first EOS, UNKNOWN and PADDING dropped."""
        texts, scores = [], []
        probs = logp.exp().tolist() if logp is not None else None
        for row_i, row in enumerate(ids.tolist()):
            chars, conf = [], []
            for j, sym in enumerate(row):
                if sym == self.eos:
                    break
                if sym < len(self.alphabet):
                    chars.append(self.alphabet[sym])
                    conf.append(probs[row_i][j] if probs is not None else 1.0)
            texts.append("".join(chars))
            scores.append(conf)
        return Recognition(texts, scores)

    def recognize(self, images: torch.Tensor) -> Recognition:
        """TextZoom's ASTER evaluation: beam search (width 5), then get_str_list."""
        ids, logp = self.decoder.beam_search(self.encode(images), self.beam_width, self.eos)
        return self.decode_ids(ids, logp)

    def load_official(self, obj: Any, source: str = "checkpoint") -> None:
        """Load aster.pytorch weights (``{'state_dict': ...}`` or a bare state_dict), strictly."""
        state = aster_state_dict(obj, source)
        classes = state["decoder.decoder.fc.weight"].shape[0]
        if classes != self.num_classes:
            raise TsrxError(
                f"{source}: the ASTER checkpoint has {classes} classes "
                f"({voc_type_for_classes(classes, source)} vocabulary), this "
                f"recognizer has {self.num_classes} (voc_type = {self.voc_type!r})"
            )
        load_strictly(self, state, source, "ASTER")


# -- official checkpoints ----------------------------------------------------------------
ASTER_MARKERS = (
    "encoder.layer0.0.weight",
    "decoder.decoder.attention_unit.sEmbed.weight",
    "stn_head.stn_fc2.weight",
)


def aster_state_dict(obj: Any, source: str = "checkpoint") -> OrderedDict[str, torch.Tensor]:
    """The ASTER weights of ``obj`` (``module.`` dropped), or a TsrxError naming what it is."""
    inner = (
        obj.get("state_dict")
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
        else obj
    )
    state = marked_state(inner, ASTER_MARKERS)
    if state is not None:
        return state
    raise TsrxError(
        f"{source}: expected an ASTER checkpoint ({{'state_dict': ...}} with "
        f"{', '.join(ASTER_MARKERS)}), got {describe_checkpoint(obj)}"
    )


@CHECKPOINT_FORMATS.register("aster")
def read_aster(obj: Any) -> OfficialCheckpoint | None:
    """aster.pytorch's ``{'state_dict': ...}`` (``demo.pth.tar``, as TextZoom loads it)."""
    if not isinstance(obj, Mapping):
        return None
    inner = obj.get("state_dict", obj)
    state = marked_state(inner, ASTER_MARKERS, tensors_only=True)
    if state is None:
        return None
    fc = state.get("decoder.decoder.fc.weight")
    if fc is None:
        raise TsrxError(
            "ASTER checkpoint: decoder.decoder.fc.weight is missing, so the "
            "class count (vocabulary) is unknown"
        )
    classes = int(fc.shape[0])
    voc = voc_type_for_classes(classes)
    emb = state.get("decoder.decoder.tgt_embedding.weight")
    if emb is not None and emb.shape[0] != classes + 1:
        raise TsrxError(
            f"ASTER checkpoint: decoder.decoder.tgt_embedding has {emb.shape[0]} "
            f"rows, expected {classes + 1} (classes + <BOS>) for fc's {classes}"
        )
    info = {"classes": classes, "voc_type": voc}
    for key in ("epoch", "best_res", "iters"):
        if isinstance(obj.get(key), (int, float)) and inner is not obj:
            info[key] = obj[key]
    return OfficialCheckpoint(
        "aster",
        {"recognizer": {"type": "aster", "voc_type": voc}},
        OrderedDict((f"recognizer.{k}", v) for k, v in state.items()),
        info,
    )
