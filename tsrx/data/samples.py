"""Reading one TextZoom entry and deciding whether it is usable.

Shared by the dataset, the decoded cache and ``tsrx data check`` so that all three agree
on what a bad sample is. A bad sample is reported with the LMDB path, the split name and
its 1-based index; nothing here ever moves on to the next index by itself (the reference
loaders' ``return self[index + 1]`` hides corrupt data and shifts every later sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tsrx.data.lmdb_io import LazyLmdb, hr_key, label_key, lr_key
from tsrx.data.transforms import decode_image, preprocess
from tsrx.errors import TsrxError
from tsrx.models.text import VOCABULARIES, filter_text

# Characters any vocabulary knows; anything else (spaces, non-ASCII, control characters)
# in a label means the label is not what the protocol expects.
KNOWN_CHARS = frozenset(VOCABULARIES["all"])


class SampleProblem(Exception):
    """Why one entry is unusable (without the location, which the caller adds)."""


@dataclass(frozen=True)
class BadSample:
    path: str  # the LMDB directory
    split: str  # the name it has in the data set (``train1``, ``test/easy``)
    index: int  # 1-based LMDB index
    reason: str

    def __str__(self) -> str:
        return f"{self.path} (split {self.split}) index {self.index}: {self.reason}"


class BadSampleError(TsrxError):
    def __init__(self, bad: BadSample, hint: str = ""):
        self.bad = bad
        super().__init__(
            str(bad)
            + (
                hint
                or "; `tsrx data check` lists every problem, "
                "data.skip_bad = true skips and counts them"
            )
        )


def read_raw(db: LazyLmdb, index: int) -> tuple[str, bytes, bytes]:
    """The UTF-8 label and the encoded HR/LR bytes of 1-based ``index``."""
    keys = (label_key(index), hr_key(index), lr_key(index))
    found: list[bytes] = []
    for k, v in zip(keys, db.get_many(keys)):
        if v is None:
            raise SampleProblem(f"missing key {k.decode()!r}")
        found.append(v)
    raw_label, hr, lr = found
    try:
        label = raw_label.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleProblem(f"label is not UTF-8 ({raw_label[:40]!r}: {exc.reason})") from None
    return label, hr, lr


def decode_pair(
    hr: bytes, lr: bytes, index: int, hr_size: Sequence[int], lr_size: Sequence[int], mask: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and preprocess both images; uint8 (C, H, W) each."""
    out = []
    for key, data, size in ((hr_key(index), hr, hr_size), (lr_key(index), lr, lr_size)):
        try:
            img = decode_image(data)
        except ValueError as exc:
            raise SampleProblem(f"{key.decode()!r}: {exc}") from None
        out.append(preprocess(img, size, mask))
    return out[0], out[1]


def check_label(label: str, voc_type: str, max_len: int) -> str:
    """The label filtered as TextZoom's ``str_filt`` does, or SampleProblem."""
    if not label:
        raise SampleProblem("empty label")
    unknown = sorted(set(label) - KNOWN_CHARS)
    if unknown:
        raise SampleProblem(
            f"label {label!r} has characters outside the vocabulary: "
            + " ".join(repr(c) for c in unknown)
        )
    if len(label) > max_len:
        raise SampleProblem(f"label {label!r} is longer than max_len={max_len}")
    text = filter_text(label, voc_type)
    if not text:
        raise SampleProblem(f"label {label!r} has no character of vocabulary {voc_type!r}")
    return text
