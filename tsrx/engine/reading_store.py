"""The reading store: what frozen judges read, kept on disk across evaluations and processes.

Every ``tsrx eval --baselines`` and every run of a study with ``baselines = true`` has its
judges read the same bicubic and HR images of the test set again: two thirds of an
evaluation's readings, and the judges are its cost (issue 25). A judge's readings are
kept here under its identity (tsrx/engine/judge_identity.py: class, source files, weights,
options), each keyed by the image's digest (bytes, dtype, shape); the model's own
recognizer is never kept (it changes with training).

Layout: ``<root>/<identity>/`` holds ``identity.json`` (what the judge is, for a person)
and shard files ``<time>-<host>-<pid>-<token>.rd``. No locks (DDP ranks, Slurm jobs, NFS):
each process writes new shards atomically (temp file + rename) and never rewrites another's;
a process that saw ``MERGE_AT`` shards writes one merged shard and removes those it read
(a shard written meanwhile by another process is not among them). A shard that is
damaged (truncated, corrupt) is ignored with a warning: its checksum must match.

Where: ``$TSRX_READING_STORE`` (a folder, or ``off``), else ``$TSRX_CACHE_DIR/readings``,
else ``${XDG_CACHE_HOME:-~/.cache}/tsrx/readings``. ``[eval] reading_store = false`` and
``tsrx eval --no-reading-store`` turn it off for one evaluation. Deleting the folder clears it.
New readings are written when an evaluation ends (also one that failed) and every
``FLUSH_EVERY`` new readings of a judge (a Slurm job killed by its time limit mid-evaluation).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tsrx.cache_dir import cache_dir

log = logging.getLogger("tsrx.eval")

ENV = "TSRX_READING_STORE"
OFF = ("off", "0", "false", "no", "none")
MAGIC = b"TSRXRD01"
SUFFIX = ".rd"
KEY_BYTES = 16
MERGE_AT = 8  # shards a process saw before it merges them into one
FLUSH_EVERY = 4096  # new readings of one judge written before the evaluation ends
MAX_READINGS = 1_000_000  # kept per judge identity (~40 MB on disk), the oldest dropped first
MAX_IDENTITIES = 64  # judge identities kept under the root, the least recently used dropped

_HEAD = struct.Struct("<8sI")  # magic, number of readings
_ENTRY = struct.Struct("<H")  # a reading's length in UTF-8 bytes (after its 16-byte key)
_disabled = 0  # evaluations running with the store turned off (:func:`turned_off`)


def root() -> Path | None:
    """The store's folder, or None when it is turned off."""
    if _disabled:
        return None
    chosen = os.environ.get(ENV, "").strip()
    if chosen.lower() in OFF:
        return None
    if chosen:
        return Path(chosen).expanduser()
    cache = cache_dir()
    return None if cache is None else cache / "readings"


@contextlib.contextmanager
def turned_off(off: bool = True) -> Iterator[None]:
    """The store off inside the block (``[eval] reading_store = false``)."""
    global _disabled
    _disabled += int(off)
    try:
        yield
    finally:
        _disabled -= int(off)


def encode(readings: dict[bytes, str]) -> bytes:
    """A shard: header, entries (key, length, UTF-8 text), BLAKE2b of all that."""
    parts = [b""]
    count = 0
    for key, text in readings.items():
        raw = text.encode("utf-8")
        if len(key) != KEY_BYTES or len(raw) > 0xFFFF:
            continue  # no such reading comes from a recognizer; never worth a broken shard
        parts += [key, _ENTRY.pack(len(raw)), raw]
        count += 1
    parts[0] = _HEAD.pack(MAGIC, count)
    body = b"".join(parts)
    return body + hashlib.blake2b(body, digest_size=16).digest()


def decode(data: bytes) -> dict[bytes, str]:
    """The readings of a shard; ValueError when it is not a whole, intact one."""
    if len(data) < _HEAD.size + 16:
        raise ValueError("shorter than a header (truncated?)")
    body, check = data[:-16], data[-16:]
    magic, count = _HEAD.unpack_from(body)
    if magic != MAGIC:
        raise ValueError("not a tsrx reading shard")
    if hashlib.blake2b(body, digest_size=16).digest() != check:
        raise ValueError("checksum mismatch (truncated or corrupt)")
    out: dict[bytes, str] = {}
    at = _HEAD.size
    for _ in range(count):
        key = body[at : at + KEY_BYTES]
        (size,) = _ENTRY.unpack_from(body, at + KEY_BYTES)
        at += KEY_BYTES + _ENTRY.size
        out[key] = body[at : at + size].decode("utf-8")
        at += size
    if at != len(body):
        raise ValueError("length does not match its entries")
    return out


def _shard_names(folder: Path) -> list[str]:
    """Shard files, oldest first (names start with their writer's clock)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:  # unreadable: the judges read, as without a store
        log.warning("reading store: %s not read: %s", folder, exc)
        return []
    return sorted(n for n in names if n.endswith(SUFFIX) and not n.startswith("."))


def _new_name() -> str:
    from tsrx.runfiles import _host

    return f"{time.time_ns():020d}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"


class Shelf:
    """The stored readings of one judge identity: loaded on the first lookup, new readings
    written by :meth:`flush`."""

    def __init__(self, folder: Path, about: dict[str, Any]):
        self.folder = folder
        self.about = about
        self.readings: dict[bytes, str] | None = None
        self.pending: dict[bytes, str] = {}
        self.shards: list[str] = []  # the shard files whose readings are loaded
        self.skipped: set[str] = set()

    def lookup(self, keys: list[bytes]) -> list[str | None]:
        if self.readings is None:
            self._load()
        readings = self.readings or {}
        return [readings.get(key) for key in keys]

    def add(self, key: bytes, text: str) -> bool:
        """Keep a new reading (written by :meth:`flush`); False when it was kept already."""
        if self.readings is None:
            self._load()
        if self.readings is None or key in self.readings:
            return False
        self.readings[key] = text
        self.pending[key] = text
        if len(self.pending) >= FLUSH_EVERY:  # a job killed mid-evaluation loses little
            self.flush()
        return True

    def _load(self) -> None:
        self.readings = {}
        self._load_shards(_shard_names(self.folder))
        _trim(self.readings)
        if self.shards:
            with contextlib.suppress(OSError):  # marks the identity as used (see _prune)
                os.utime(self.folder)

    def refresh(self) -> None:
        """Load the shards written by other processes since this shelf was loaded: a run's
        shelf is loaded at its first validation, and the runs of a study beside it store
        their baseline readings while it trains. Nothing before the first lookup, which
        loads them all."""
        if self.readings is None:
            return
        seen = set(self.shards) | self.skipped
        self._load_shards([n for n in _shard_names(self.folder) if n not in seen])
        _trim(self.readings)

    def _load_shards(self, names: list[str]) -> None:
        readings = self.readings if self.readings is not None else {}
        for _ in range(3):  # a merge elsewhere may remove shards between listdir and open
            vanished = False
            for name in names:
                try:
                    data = (self.folder / name).read_bytes()
                    readings.update(decode(data))
                except FileNotFoundError:
                    vanished = True
                    continue
                except (OSError, ValueError, UnicodeDecodeError, struct.error) as exc:
                    self.skipped.add(name)
                    log.warning("reading store: %s ignored: %s", self.folder / name, exc)
                    continue
                self.shards.append(name)
            if not vanished:
                break
            seen = set(self.shards) | self.skipped
            names = [n for n in _shard_names(self.folder) if n not in seen]
        self.readings = readings

    def flush(self) -> int:
        """Write the new readings as one shard (merging the shards read, past ``MERGE_AT``);
        returns how many were written. A failed write warns and loses only these readings."""
        if not self.pending:
            return 0
        new, self.pending = self.pending, {}
        from tsrx.errors import TsrxError
        from tsrx.runfiles import atomic_write_bytes, dumps

        try:
            fresh = not self.folder.is_dir()
            self.folder.mkdir(parents=True, exist_ok=True)
            if fresh or not (self.folder / "identity.json").is_file():
                atomic_write_bytes(self.folder / "identity.json", dumps(self.about).encode())
                _prune(self.folder.parent, keep=self.folder)
            name = _new_name()
            merge = self.readings is not None and len(self.shards) + 1 >= MERGE_AT
            if merge and self.readings is not None:
                _trim(self.readings)
                atomic_write_bytes(self.folder / name, encode(self.readings))
            else:
                atomic_write_bytes(self.folder / name, encode(new))
            if merge:
                for old in self.shards:
                    with contextlib.suppress(OSError):
                        (self.folder / old).unlink()
                self.shards = []
            self.shards.append(name)
        except (OSError, TsrxError) as exc:
            log.warning(
                "reading store: %d reading(s) not kept in %s: %s", len(new), self.folder, exc
            )
            return 0
        return len(new)


def _trim(readings: dict[bytes, str]) -> None:
    """At most ``MAX_READINGS``, the oldest (first loaded) dropped."""
    extra = len(readings) - MAX_READINGS
    if extra > 0:
        for key in list(readings)[:extra]:
            del readings[key]


def _prune(folder: Path, keep: Path) -> None:
    """At most ``MAX_IDENTITIES`` judge identities: the least recently used go."""
    try:
        entries = [p for p in folder.iterdir() if p.is_dir() and p != keep]
        if len(entries) < MAX_IDENTITIES:
            return
        entries.sort(key=lambda p: p.stat().st_mtime)
    except OSError:
        return
    for old in entries[: len(entries) - MAX_IDENTITIES + 1]:
        shutil.rmtree(old, ignore_errors=True)


_shelves: dict[Path, Shelf] = {}
# a forked child (a data-loader worker) keeps none of the parent's shelves: their pending
# readings are the parent's to write
os.register_at_fork(after_in_child=_shelves.clear)


def shelf(identity: str, about: dict[str, Any]) -> Shelf | None:
    """The process's shelf of a judge identity under the current root (None: store off)."""
    where = root()
    if where is None:
        return None
    folder = where / identity
    if folder not in _shelves:
        _shelves[folder] = Shelf(folder, about)
    return _shelves[folder]


def refresh_all() -> None:
    """Every loaded shelf takes the shards other processes wrote since it loaded (an
    evaluation calls it first: it sees what was stored before it began)."""
    for s in list(_shelves.values()):
        s.refresh()


def flush_all() -> int:
    """Write every shelf's new readings (the evaluator calls it when an evaluation ends, also
    one that failed: the readings made before the failure are right)."""
    return sum(s.flush() for s in list(_shelves.values()))


__all__ = [
    "Shelf",
    "root",
    "shelf",
    "flush_all",
    "refresh_all",
    "turned_off",
    "encode",
    "decode",
]
