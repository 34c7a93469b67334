"""TextZoom's LMDB layout: key names, a fork-safe lazy reader and a writer.

One LMDB per split. Keys are bytes, 1-based, nine digits (as in the TextZoom release and
its reference loader): ``num-samples`` (ASCII integer), ``label-%09d`` (UTF-8),
``image_hr-%09d`` and ``image_lr-%09d`` (encoded image bytes).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import lmdb

from tsrx.errors import TsrxError

NUM_SAMPLES_KEY = b"num-samples"


def label_key(index: int) -> bytes:
    return b"label-%09d" % index


def hr_key(index: int) -> bytes:
    return b"image_hr-%09d" % index


def lr_key(index: int) -> bytes:
    return b"image_lr-%09d" % index


def is_lmdb_dir(path: str | Path) -> bool:
    return (Path(path) / "data.mdb").is_file()


def split_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be an LMDB split (None when it may be one)."""
    p = Path(path)
    if not p.exists():
        return "no such LMDB folder"
    if not p.is_dir():
        return "a plain file, not an LMDB folder (expected a folder holding data.mdb)"
    if not is_lmdb_dir(p):
        return "a folder without data.mdb, not an LMDB"
    return None


def open_readonly(path: str | Path) -> lmdb.Environment:
    """Open an LMDB read-only with the reference loader's flags; a clear error if it is not one.

    lock=False: readers of an immutable data set need no lock file (and the data may sit on a
    read-only file system); readahead=False: random access over a data set larger than the
    page cache would otherwise read pages nobody asked for.
    """
    p = Path(path)
    if not p.exists():
        raise TsrxError(f"{p}: no such LMDB directory")
    if not p.is_dir() or not is_lmdb_dir(p):
        raise TsrxError(f"{p}: not an LMDB (expected a directory holding data.mdb)")
    try:
        return lmdb.open(
            str(p), readonly=True, lock=False, readahead=False, meminit=False, max_readers=126
        )
    except lmdb.Error as exc:
        raise TsrxError(f"{p}: not a readable LMDB ({exc})") from exc


# One environment per LMDB file per process: py-lmdb refuses to open the same files twice
# in a process (LMDB's locks are per process and file), and two datasets may share an
# LMDB (val defaulting to test). Keyed by the data file's identity, not only its path, so a
# data set re-created at the same path is opened afresh.
_EnvKey = tuple[str, int | None, int | None]  # real path, device and inode of data.mdb
_envs: dict[_EnvKey, lmdb.Environment] = {}
_envs_pid = os.getpid()


def _env_key(path: str) -> _EnvKey:
    real = os.path.realpath(path)
    try:
        st = os.stat(os.path.join(real, "data.mdb"))
        return real, st.st_dev, st.st_ino
    except OSError:
        return real, None, None


def shared_env(path: str | Path) -> lmdb.Environment:
    """This process's read-only environment of ``path``, opened on first use.

    An environment inherited through fork must not be used (LMDB's documented restriction),
    so a DataLoader worker or a forked rank closes its inherited copies (harmless to the
    parent: lock=False means no shared locks) and opens its own.
    """
    global _envs_pid
    if _envs_pid != os.getpid():
        for stale in _envs.values():
            try:
                stale.close()

            except lmdb.Error:
                pass
        _envs.clear()
        _envs_pid = os.getpid()
    key = _env_key(str(path))
    env = _envs.get(key)
    if env is None:
        env = _envs[key] = open_readonly(path)
    return env


def close_env(path: str | Path) -> None:
    """Close this process's environment of ``path`` (before rewriting it, in tests)."""
    env = _envs.pop(_env_key(str(path)), None)
    if env is not None and _envs_pid == os.getpid():
        env.close()


class LazyLmdb:
    """A picklable handle on an LMDB: only the path travels, the environment is per process."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    @property
    def env(self) -> lmdb.Environment:
        return shared_env(self.path)

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(write=False, buffers=False) as txn:
            return txn.get(key)

    def get_many(self, keys: Iterable[bytes]) -> list[bytes | None]:
        with self.env.begin(write=False, buffers=False) as txn:
            return [txn.get(k) for k in keys]


def read_num_samples(db: LazyLmdb) -> int:
    raw = db.get(NUM_SAMPLES_KEY)
    if raw is None:
        raise TsrxError(f"{db.path}: missing key 'num-samples' (not a TextZoom LMDB?)")
    try:
        n = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise TsrxError(
            f"{db.path}: 'num-samples' is {raw[:40]!r}, expected an ASCII integer"
        ) from None
    if n < 0:
        raise TsrxError(f"{db.path}: 'num-samples' is {n}, expected >= 0")
    return n


def write_lmdb(
    path: str | Path, samples: Iterable[tuple[str, bytes, bytes]], map_size: int = 1 << 32
) -> int:
    """Write ``(label, hr_bytes, lr_bytes)`` samples as a TextZoom LMDB; returns the count."""
    Path(path).mkdir(parents=True, exist_ok=True)
    close_env(path)
    env = lmdb.open(str(path), map_size=map_size, subdir=True, meminit=False)
    n = 0
    try:
        txn = env.begin(write=True)
        for label, hr, lr in samples:
            n += 1
            txn.put(label_key(n), label.encode("utf-8"))
            txn.put(hr_key(n), hr)
            txn.put(lr_key(n), lr)
            if n % 1000 == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(NUM_SAMPLES_KEY, str(n).encode("ascii"))
        txn.commit()
        env.sync()
    finally:
        env.close()
    return n
