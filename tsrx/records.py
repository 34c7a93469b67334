"""Per-image records of an evaluation: one row per image, columns per row kind and judge.

An evaluation result holds split means only; a paired test needs to know, image by image,
who read what. ``Records`` keeps, for every image, its split, LMDB index and label, and for
each row kind (``model``, and the baselines ``bicubic`` and ``hr`` when evaluated) each
judge's reading and correctness, PSNR and SSIM (per image, whatever the protocol: the
protocol only decides how the means are pooled).

The file is a compressed ``.npz`` of columnar arrays (numpy only, no pickle): booleans and
float32 for the numbers, strings as one NUL-joined UTF-8 buffer per column, decoded only
when read, so the statistics load in milliseconds. A JSON header (``meta``) names the
splits, rows and judges; array names use positions, never judge names. Written atomically.
Nothing here imports torch.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tsrx.errors import TsrxError

FORMAT = "tsrx-records"
VERSION = 1
ROWS = ("model", "bicubic", "hr")


def _encode(texts: list[str], what: str) -> np.ndarray:
    for t in texts:
        if "\x00" in t:
            raise TsrxError(f"records: {what} {t!r} holds a NUL character, which cannot be stored")
    return np.frombuffer("\x00".join(texts).encode("utf-8"), dtype=np.uint8)


def _decode(blob: Any, n: int) -> list[str]:
    """Strings of a NUL-joined buffer; ``blob`` may be a callable that reads it (lazily)."""
    if callable(blob):
        blob = blob()
    if n == 0:
        return []
    text: str = blob.tobytes().decode("utf-8")
    return text.split("\x00")


def _lazy(path: Path, name: str) -> Any:
    """Read one array of the file when first needed: the strings are most of a file's bytes,
    and the statistics never need them."""

    def read() -> np.ndarray:
        with np.load(path, allow_pickle=False) as z:
            array: np.ndarray = z[name]
        return array

    return read


@dataclass
class RowRecords:
    """One row kind's per-image values: PSNR/SSIM (None for HR) and each judge's reading."""

    psnr: np.ndarray | None = None
    ssim: np.ndarray | None = None
    correct: dict[str, np.ndarray] = field(default_factory=dict)
    _preds: dict[str, Any] = field(default_factory=dict)  # list, buffer or its reader

    def preds(self, judge: str) -> list[str]:
        if not isinstance(self._preds[judge], list):
            self._preds[judge] = _decode(self._preds[judge], len(self.correct[judge]))
        texts: list[str] = self._preds[judge]
        return texts


@dataclass
class Records:
    """Every image of one evaluation, aligned across row kinds and judges."""

    splits: list[str]
    split: np.ndarray  # int16 code into ``splits``
    index: np.ndarray  # int64, the LMDB index (1-based) as in ``predictions``
    _labels: Any  # list[str], a NUL-joined buffer, or a reader of it
    rows: dict[str, RowRecords]
    judges: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.split.shape[0])

    @property
    def labels(self) -> list[str]:
        if not isinstance(self._labels, list):
            self._labels = _decode(self._labels, len(self))
        labels: list[str] = self._labels
        return labels

    def in_split(self, split: str) -> np.ndarray:
        """Boolean mask of the images of ``split``."""
        mask: np.ndarray = self.split == self.splits.index(split)
        return mask

    def correct(self, row: str = "model", judge: str | None = None) -> np.ndarray | None:
        """Per-image correctness of ``row`` under ``judge`` (None: the primary judge)."""
        r = self.rows.get(row)
        judge = judge or (self.judges[0] if self.judges else None)
        if r is None or judge is None:
            return None
        return r.correct.get(judge)

    def same_images(self, other: Records) -> bool:
        return (
            self.splits == other.splits
            and np.array_equal(self.split, other.split)
            and np.array_equal(self.index, other.index)
        )


class RecordCollector:
    """Per-batch pieces of an evaluation, merged into :class:`Records` (after a DDP gather)."""

    def __init__(self, splits: list[str], judges: list[str]):
        self.splits = list(splits)
        self.judges = list(judges)
        self.chunks: list[dict[str, Any]] = []

    def add(
        self,
        split: str,
        index: list[int],
        labels: list[str],
        rows: dict[str, dict[str, Any]],
    ) -> None:
        """One batch: ``rows[row] = {"psnr": array|None, "ssim": ..., "preds": {judge: [str]},
        "correct": {judge: [bool]}}``."""
        self.chunks.append({"split": split, "index": list(index), "labels": list(labels), **rows})

    def build(
        self, parts: list[list[dict[str, Any]]] | None = None, meta: dict[str, Any] | None = None
    ) -> Records:
        """Records of every chunk (``parts``: each rank's chunks), ordered by split then index."""
        chunks = [c for part in (parts if parts is not None else [self.chunks]) for c in part]
        if not chunks:
            empty = np.zeros(0, np.int16)
            return Records(
                self.splits, empty, empty.astype(np.int64), [], {}, self.judges, meta or {}
            )
        code = {s: i for i, s in enumerate(self.splits)}
        split = np.concatenate(
            [np.full(len(c["index"]), code[c["split"]], np.int16) for c in chunks]
        ).astype(np.int16)
        index = np.concatenate([np.asarray(c["index"], np.int64) for c in chunks]).astype(np.int64)
        order = np.lexsort((index, split))
        labels = [t for c in chunks for t in c["labels"]]
        rows: dict[str, RowRecords] = {}
        for row in ROWS:
            if not any(row in c for c in chunks):
                continue
            r = RowRecords()
            for metric in ("psnr", "ssim"):
                if all(c.get(row, {}).get(metric) is not None for c in chunks):
                    values = np.concatenate(
                        [np.asarray(c[row][metric], np.float32) for c in chunks]
                    )
                    setattr(r, metric, values[order])
            for j in self.judges:
                if all(j in c.get(row, {}).get("correct", {}) for c in chunks):
                    r.correct[j] = np.asarray(
                        [v for c in chunks for v in c[row]["correct"][j]], bool
                    )[order]
                    preds = [t for c in chunks for t in c[row]["preds"][j]]
                    r._preds[j] = [preds[i] for i in order]
            rows[row] = r
        return Records(
            self.splits,
            split[order],
            index[order],
            [labels[i] for i in order],
            rows,
            self.judges,
            dict(meta or {}),
        )


# -- the file --------------------------------------------------------------------------------
def to_bytes(rec: Records) -> bytes:
    """The ``.npz`` bytes of ``rec`` (columnar, deflate-compressed, no pickle)."""
    arrays: dict[str, np.ndarray] = {
        "split": rec.split.astype(np.int16),
        "index": rec.index.astype(np.int64),
        "label": _encode(rec.labels, "label"),
    }
    columns: dict[str, dict[str, Any]] = {}
    for row, r in rec.rows.items():
        col: dict[str, Any] = {"judges": []}
        for metric in ("psnr", "ssim"):
            if getattr(r, metric) is not None:
                arrays[f"{row}.{metric}"] = np.asarray(getattr(r, metric), np.float32)
                col[metric] = True
        for k, j in enumerate(rec.judges):
            if j in r.correct:
                arrays[f"{row}.correct.{k}"] = np.asarray(r.correct[j], bool)
                arrays[f"{row}.pred.{k}"] = _encode(r.preds(j), f"{row} reading by {j}")
                col["judges"].append(j)
        columns[row] = col
    header = {
        "format": FORMAT,
        "version": VERSION,
        "n": len(rec),
        "splits": rec.splits,
        "judges": rec.judges,
        "columns": columns,
        **{k: v for k, v in rec.meta.items() if k not in ("format", "version")},
    }
    arrays["meta"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: allow_pickle
    return buf.getvalue()


def write_records(path: Path, rec: Records) -> Path:
    """Write ``rec`` to ``path`` atomically (temp file, fsync, rename)."""
    from tsrx.runfiles import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, to_bytes(rec))
    return path


def read_records(path: Path) -> Records:
    """The records of ``path``; a file that is not one is a TsrxError naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            # numbers now; string buffers (labels, readings) when first read
            data = {
                k: (z[k] if k != "label" and ".pred." not in k else _lazy(path, k)) for k in z.files
            }
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise TsrxError(f"{path}: not a per-image records file (.npz): {exc}") from None
    try:
        meta = json.loads(data["meta"].tobytes().decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TsrxError(
            f"{path}: per-image records without a readable 'meta' header: {exc}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TsrxError(f"{path}: not a tsrx per-image records file (meta.format != {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise TsrxError(
            f"{path}: per-image records version {meta.get('version')!r}; this tsrx reads "
            f"version {VERSION}"
        )
    try:
        n = int(meta["n"])
        judges = list(meta["judges"])
        rows: dict[str, RowRecords] = {}
        for row, col in meta["columns"].items():
            r = RowRecords()
            for metric in ("psnr", "ssim"):
                if col.get(metric):
                    setattr(r, metric, data[f"{row}.{metric}"])
            for j in col["judges"]:
                k = judges.index(j)
                r.correct[j] = data[f"{row}.correct.{k}"].astype(bool, copy=False)
                r._preds[j] = data[f"{row}.pred.{k}"]
            rows[row] = r
        rec = Records(
            list(meta["splits"]), data["split"], data["index"], data["label"], rows, judges, meta
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise TsrxError(f"{path}: per-image records are incomplete: missing or bad {exc}") from None
    bad = [
        name
        for name, a in [("split", rec.split), ("index", rec.index)]
        + [(f"{row}.correct", c) for row, r in rows.items() for c in r.correct.values()]
        if a.shape != (n,)
    ]
    if bad:
        raise TsrxError(f"{path}: per-image records of {n} images, but {bad[0]} has another length")
    return rec
