"""The TextZoom LMDB data set (registered as dataset ``textzoom``).

Each item is ``{"lr": uint8 (C,16,64), "hr": uint8 (C,32,128), "label": str, "index": int}``
with ``index`` the 0-based position in this (concatenated) data set; ``lmdb_index(i)`` maps
it back to the split and 1-based LMDB index. ``tsrx.data.loader.collate_batch`` turns items
into the float batch of the contract.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tsrx.data.cache import DecodedCache, default_cache_dir, load_or_build
from tsrx.data.lmdb_io import LazyLmdb, hr_key, label_key, lr_key, read_num_samples, split_problem
from tsrx.data.samples import (
    BadSample,
    BadSampleError,
    SampleProblem,
    check_label,
    decode_pair,
    read_raw,
)
from tsrx.errors import TsrxError
from tsrx.models.text import VOCABULARIES

log = logging.getLogger("tsrx.data")


class LmdbSplit:
    """One TextZoom LMDB: raw reads, optionally through the decoded cache."""

    def __init__(
        self,
        path: Path,
        split: str,
        hr_size: Sequence[int],
        lr_size: Sequence[int],
        mask: bool,
        cache_dir: Path | None,
    ):
        self.path, self.split = path, split
        self.hr_size, self.lr_size, self.mask = list(hr_size), list(lr_size), mask
        problem = split_problem(path)
        if problem:
            raise TsrxError(f"split {split} ({path}): {problem}")
        self.db = LazyLmdb(path)
        try:
            self.num_samples = read_num_samples(self.db)
        except TsrxError as exc:
            raise TsrxError(f"{exc} (split {split})") from exc
        if self.num_samples == 0:
            raise TsrxError(f"split {split} ({path}) is empty: its num-samples is 0")
        self.cache: DecodedCache | None = None
        if cache_dir is not None:
            self.cache = load_or_build(path, hr_size, lr_size, mask, cache_dir)

    def bad(self, index: int, reason: str) -> BadSample:
        return BadSample(str(self.path), self.split, index, reason)

    def missing_entries(self) -> list[tuple[int, str]]:
        """(1-based index, first missing key) of incomplete entries; cheap when none are."""
        with self.db.env.begin() as txn:
            if txn.stat()["entries"] >= 3 * self.num_samples + 1:
                return []
            out = []
            for i in range(1, self.num_samples + 1):
                for k in (label_key(i), hr_key(i), lr_key(i)):
                    if txn.get(k) is None:
                        out.append((i, k.decode()))
                        break
            return out

    def scan(self, index: int) -> str:
        """Raw label of a usable entry, or SampleProblem: from the cache's record when cached
        (no pixels touched), else by reading and decoding the entry."""
        if self.cache is not None:
            return self._cached_label(self.cache, index)
        return self.read(index)[0]

    @staticmethod
    def _cached_label(cache: DecodedCache, index: int) -> str:
        # the cache records a problem for every entry it has no label of
        label = cache.labels[index - 1]
        if index in cache.problems or label is None:
            raise SampleProblem(cache.problems.get(index, "no label in the decoded cache"))
        return label

    def read(self, index: int) -> tuple[str, np.ndarray, np.ndarray]:
        """(raw label, hr, lr) of 1-based ``index``, or SampleProblem."""
        if self.cache is not None:
            label = self._cached_label(self.cache, index)
            hr, lr = self.cache.images(index)
            return label, hr, lr
        label, hr_bytes, lr_bytes = read_raw(self.db, index)
        hr, lr = decode_pair(hr_bytes, lr_bytes, index, self.hr_size, self.lr_size, self.mask)
        return label, hr, lr


class TextZoomDataset(Dataset[dict[str, Any]]):
    """TextZoom LMDBs ``roots`` (relative to ``root``), concatenated in order.

    ``cache``: decode every entry once into memory-mapped uint8 files under ``cache_dir``
    (default ``<root>/.tsrx_cache``) shared by all workers and ranks. ``skip_bad``: skip
    unusable entries and count them in ``bad`` instead of raising; without the cache this
    reads every entry once at start-up to find them.
    """

    def __init__(
        self,
        root: str,
        roots: list[str],
        hr_size: list[int],
        lr_size: list[int],
        mask: bool,
        voc_type: str,
        max_len: int,
        skip_bad: bool,
        cache: bool = True,
        cache_dir: str = "",
    ):
        if voc_type not in VOCABULARIES:
            raise TsrxError(f"voc_type {voc_type!r} is not one of {', '.join(VOCABULARIES)}")
        if not roots:
            raise TsrxError(f"dataset under {root!r}: 'roots' is empty; name at least one LMDB")
        self.root = Path(root)
        self.voc_type, self.max_len, self.skip_bad = voc_type, max_len, skip_bad
        self.hr_size, self.lr_size, self.mask = list(hr_size), list(lr_size), bool(mask)
        folder = None
        if cache:
            folder = Path(cache_dir) if cache_dir else default_cache_dir(self.root)
        self.splits = [
            LmdbSplit(self.root / r, str(r), hr_size, lr_size, mask, folder) for r in roots
        ]
        self.bad: list[BadSample] = []
        split_of, index_of = [], []
        for s_i, split in enumerate(self.splits):
            for i in self._usable(split):
                split_of.append(s_i)
                index_of.append(i)
        self._split_of = np.asarray(split_of, dtype=np.int32)
        self._index_of = np.asarray(index_of, dtype=np.int64)
        if self.bad:
            log.warning(
                "skipped %d bad sample(s) in %s; first: %s",
                len(self.bad),
                ", ".join(s.split for s in self.splits),
                self.bad[0],
            )

    def _usable(self, split: LmdbSplit) -> range | list[int]:
        """The 1-based indices to serve; records or raises on bad ones as configured."""
        n = split.num_samples
        if not self.skip_bad and split.cache is None:
            missing = split.missing_entries()
            if missing:
                index, key = missing[0]
                raise BadSampleError(
                    split.bad(
                        index,
                        (
                            f"missing key {key!r} (num-samples is {n}; {len(missing)} incomplete "
                            f"entr{'y' if len(missing) == 1 else 'ies'}, first shown)"
                        ),
                    )
                )
            return range(1, n + 1)  # other problems surface when the entry is read
        good = []
        for i in range(1, n + 1):
            try:
                check_label(split.scan(i), self.voc_type, self.max_len)
                good.append(i)
            except SampleProblem as exc:
                bad = split.bad(i, str(exc))
                if not self.skip_bad:
                    raise BadSampleError(bad) from None
                self.bad.append(bad)
        return good

    def __len__(self) -> int:
        return len(self._index_of)

    def lmdb_index(self, position: int) -> tuple[str, int]:
        """(split name, 1-based LMDB index) of 0-based ``position``."""
        return self.splits[self._split_of[position]].split, int(self._index_of[position])

    def __getitem__(self, position: int) -> dict[str, Any]:
        if position < 0 or position >= len(self):
            raise IndexError(f"index {position} out of range for {len(self)} samples")
        split = self.splits[self._split_of[position]]
        i = int(self._index_of[position])
        try:
            label, hr, lr = split.read(i)
            text = check_label(label, self.voc_type, self.max_len)
        except SampleProblem as exc:
            raise BadSampleError(split.bad(i, str(exc))) from None
        return {
            "lr": torch.from_numpy(lr),
            "hr": torch.from_numpy(hr),
            "label": text,
            "index": position,
        }


def open_lmdb_dataset(path: str | Path, **options: Any) -> TextZoomDataset:
    """A dataset over one LMDB folder with TextZoom's defaults (for the CLI and benchmarks)."""
    p = Path(path).resolve()
    kw: dict[str, Any] = dict(
        hr_size=[32, 128],
        lr_size=[16, 64],
        mask=True,
        voc_type="all",
        max_len=100,
        skip_bad=False,
        cache=False,
    )
    kw.update(options)
    return TextZoomDataset(root=str(p.parent), roots=[p.name], **kw)
