"""Helpers shared by the data tests (no tests here): tiny synthetic sets, hand-made LMDBs."""

from __future__ import annotations

import io
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image

from tsrx.data.lmdb_io import close_env

DATA_KW = dict(
    hr_size=[32, 128], lr_size=[16, 64], mask=True, voc_type="all", max_len=100, skip_bad=False
)


def png(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_raw_lmdb(path: Path, entries: dict[bytes, bytes]) -> Path:
    """An LMDB holding exactly ``entries`` (for malformed data sets)."""
    path.mkdir(parents=True, exist_ok=True)
    close_env(path)
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k, v in entries.items():
            txn.put(k, v)
    env.close()
    return path


def good_entries(n: int) -> dict[bytes, bytes]:
    out = {b"num-samples": str(n).encode()}
    for i in range(1, n + 1):
        out[b"label-%09d" % i] = f"word{i}".encode()
        out[b"image_hr-%09d" % i] = png(80, 24, seed=i)
        out[b"image_lr-%09d" % i] = png(40, 12, seed=100 + i)
    return out
