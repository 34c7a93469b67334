"""Decoded cache: each LMDB decoded and preprocessed once into uint8 ``.npy`` files.

Training then never waits on PNG decoding. The files are memory-mapped read-only in every
DataLoader worker and DDP rank, so a node holds one copy in its page cache instead of one
per process (TextZoom's 17,367 training pairs are about 350 MB with the mask channel).

A cache entry is keyed by the LMDB's absolute path, its ``data.mdb`` size and mtime, and
the preprocessing parameters, so a changed data set or size never reads stale pixels. It is
built by one process under a file lock, in a temporary folder renamed into place, so ranks
that start together wait for it rather than race, and a killed build leaves no half entry.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tsrx.data.lmdb_io import LazyLmdb, read_num_samples
from tsrx.data.samples import SampleProblem, decode_pair, read_raw
from tsrx.errors import TsrxError

log = logging.getLogger("tsrx.data")

CACHE_FORMAT = 1
DEFAULT_DIRNAME = ".tsrx_cache"


def default_cache_dir(root: str | Path) -> Path:
    """``<root>/.tsrx_cache`` when writable, else ``$XDG_CACHE_HOME/tsrx`` (read-only data sets)."""
    root = Path(root)
    candidate = root / DEFAULT_DIRNAME
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tsrx" / "data"


def cache_key(
    lmdb_path: str | Path, hr_size: Sequence[int], lr_size: Sequence[int], mask: bool
) -> str:
    p = Path(lmdb_path).resolve()
    st = (p / "data.mdb").stat()
    ident = {
        "format": CACHE_FORMAT,
        "path": str(p),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "hr_size": list(hr_size),
        "lr_size": list(lr_size),
        "mask": bool(mask),
    }
    digest = hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "_", "_".join(p.parts[-2:])).strip("_")
    return f"{slug}-{digest}"


class DecodedCache:
    """One LMDB's decoded arrays: ``hr`` (N,C,H,W), ``lr`` (N,C,h,w), ``labels`` and ``problems``.

    ``labels[i]`` is the raw UTF-8 label of 1-based index ``i + 1`` (None when the entry
    could not be read); ``problems`` maps 1-based indices to what was wrong with them.
    The memory maps are opened lazily per process and never pickled.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        meta = json.loads((self.folder / "meta.json").read_text())
        self.num_samples: int = meta["num_samples"]
        self.labels: list[str | None] = meta["labels"]
        self.problems: dict[int, str] = {int(k): v for k, v in meta["problems"].items()}
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        self._pid = -1

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._maps is None or self._pid != os.getpid():
            self._maps = (
                np.load(self.folder / "hr.npy", mmap_mode="r"),
                np.load(self.folder / "lr.npy", mmap_mode="r"),
            )
            self._pid = os.getpid()
        return self._maps

    def images(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the HR and LR arrays of 1-based ``index`` (writable, small)."""
        hr, lr = self._arrays()
        return np.array(hr[index - 1]), np.array(lr[index - 1])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_maps"], state["_pid"] = None, -1
        return state


def load_or_build(
    lmdb_path: str | Path,
    hr_size: Sequence[int],
    lr_size: Sequence[int],
    mask: bool,
    cache_dir: str | Path,
) -> DecodedCache:
    """The cache entry of ``lmdb_path``, building it first if absent (one builder at a time)."""
    cache_dir = Path(cache_dir)
    key = cache_key(lmdb_path, hr_size, lr_size, mask)
    final = cache_dir / key
    if (final / "meta.json").is_file():
        return DecodedCache(final)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TsrxError(
            f"cannot create the decoded cache folder {cache_dir}: {exc}; "
            "set cache_dir in the dataset table or cache = false"
        ) from exc
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        for stale in cache_dir.glob(f".{key}.tmp-*"):
            # we hold the key's lock: this half-built entry's builder died
            log.info("removing %s, a cache build that did not finish", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if not (final / "meta.json").is_file():
            _build(Path(lmdb_path), hr_size, lr_size, mask, final)
    return DecodedCache(final)


def _build(
    lmdb_path: Path, hr_size: Sequence[int], lr_size: Sequence[int], mask: bool, final: Path
) -> None:
    n = read_num_samples(LazyLmdb(lmdb_path))
    c = 4 if mask else 3
    log.info("decoding %s (%d samples) into %s", lmdb_path, n, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        for name, size in (("hr.npy", hr_size), ("lr.npy", lr_size)):
            arr = np.lib.format.open_memmap(
                tmp / name, mode="w+", dtype=np.uint8, shape=(n, c, int(size[0]), int(size[1]))
            )
            del arr
            _reserve(tmp / name)
        chunks = [
            (
                str(lmdb_path),
                str(tmp),
                a,
                min(a + CHUNK, n + 1),
                list(hr_size),
                list(lr_size),
                bool(mask),
            )
            for a in range(1, n + 1, CHUNK)
        ]
        workers = min(_usable_cpus(), MAX_WORKERS, len(chunks))
        if workers > 1 and n >= PARALLEL_FROM:
            import multiprocessing as mp

            # spawn, not fork: the parent may hold torch threads and open LMDB environments
            with mp.get_context("spawn").Pool(workers) as pool:
                parts = pool.map(_decode_range, chunks)
        else:
            parts = [_decode_range(chunk) for chunk in chunks]
        labels: list[str | None] = [label for part, _ in parts for label in part]
        problems = {k: v for _, part in parts for k, v in part.items()}
        meta = {
            "format": CACHE_FORMAT,
            "lmdb": str(lmdb_path.resolve()),
            "num_samples": n,
            "hr_size": list(hr_size),
            "lr_size": list(lr_size),
            "mask": bool(mask),
            "labels": labels,
            "problems": problems,
        }
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        for name in ("hr.npy", "lr.npy"):
            with open(tmp / name, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _reserve(path: Path) -> None:
    """Allocate the array file's blocks now: writing into a memory map on a full disk kills the
    process with SIGBUS, whereas this fails with ENOSPC, which is reported."""
    from tsrx.runfiles import disk_full_error, is_disk_full

    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, size, exc) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate on this filesystem
            raise
    finally:
        os.close(fd)


CHUNK = 1000  # entries per task
PARALLEL_FROM = (
    10000  # below this, starting processes (each imports torch) costs more than it saves
)
MAX_WORKERS = 8


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects Slurm / cgroup CPU binding
    except AttributeError:
        return os.cpu_count() or 1


# one worker's share of a build: LMDB path, temp folder, [start, stop), hr_size, lr_size, mask
_Chunk = tuple[str, str, int, int, list[int], list[int], bool]


def _decode_range(task: _Chunk) -> tuple[list[str | None], dict[str, str]]:
    """Decode 1-based entries [start, stop) into the memory-mapped arrays of the build."""
    lmdb_path, tmp, start, stop, hr_size, lr_size, mask = task
    db = LazyLmdb(lmdb_path)
    hr = np.load(Path(tmp) / "hr.npy", mmap_mode="r+")
    lr = np.load(Path(tmp) / "lr.npy", mmap_mode="r+")
    labels: list[str | None] = []
    problems: dict[str, str] = {}
    for i in range(start, stop):
        try:
            label, hr_bytes, lr_bytes = read_raw(db, i)
            labels.append(label)
            hr[i - 1], lr[i - 1] = decode_pair(hr_bytes, lr_bytes, i, hr_size, lr_size, mask)
        except SampleProblem as exc:
            if len(labels) < i - start + 1:
                labels.append(None)
            problems[str(i)] = str(exc)
    hr.flush()
    lr.flush()
    return labels, problems
