"""Cached evaluation results: ``<run>/eval/<checkpoint stem>-<key>.json``.

The key hashes the checkpoint's bytes (sha256) together with everything that changes
an evaluation (the ``[eval]`` table and the test data), so a report reuses a result
exactly when it would compute the same one, and a retrained checkpoint or another
protocol never picks up a stale number. ``tsrx eval`` and ``tsrx report`` share it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsrx.config.toml_write import as_stored

if TYPE_CHECKING:
    from tsrx.records import Records

# The [data] keys that decide which test images an evaluation sees and how they look.
DATA_KEYS = ("root", "test", "hr_size", "lr_size", "mask", "voc_type", "max_len", "skip_bad")

_sha_memo: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so one report hashes each file once."""
    path = Path(path)
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _sha_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _sha_memo[memo] = h.hexdigest()
    return _sha_memo[memo]


def eval_settings(
    config: dict[str, Any], overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What an evaluation of a run's checkpoint depends on, besides the weights."""
    data = config.get("data") or {}
    settings = {"eval": dict(config.get("eval") or {}), "data": {k: data.get(k) for k in DATA_KEYS}}
    settings["eval"].update(overrides or {})
    # where judges' readings come from never changes a result (tsrx/engine/reading_store.py)
    settings["eval"].pop("reading_store", None)
    # as config.toml stores it (TOML has no null): the trainer's in-memory config and the
    # file a report reads give one key
    return {"eval": as_stored(settings["eval"]), "data": settings["data"]}


def cache_key(checkpoint_sha256: str, settings: dict[str, Any]) -> str:
    blob = json.dumps(
        {"checkpoint": checkpoint_sha256, "settings": settings}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def strip_cache_info(data: dict[str, Any]) -> dict[str, Any]:
    """The evaluation result itself (a cache file may wrap it or carry a ``cache`` entry)."""
    if "result" in data and "splits" not in data and isinstance(data["result"], dict):
        data = data["result"]
    return {k: v for k, v in data.items() if k != "cache"}


def lookup(
    run_dir: Path, stem: str, checkpoint: Path | None, settings: dict[str, Any]
) -> tuple[dict[str, Any] | None, Path | None, str]:
    """(result, file, how) for a checkpoint stem; ``how`` is 'verified', 'unverified' or why none.

    With the checkpoint present only the file whose key matches counts (others are
    stale: older weights or another protocol). Without it (run directory copied without
    its weights) the newest cached file is used, marked unverified.
    """
    folder = Path(run_dir) / "eval"
    files = (
        sorted(folder.glob(f"{stem}-*.json"), key=lambda p: p.stat().st_mtime)
        if folder.is_dir()
        else []
    )
    files = [f for f in files if f.stem[len(stem) + 1 :].isalnum()]
    if checkpoint is not None and Path(checkpoint).is_file():
        wanted = folder / f"{stem}-{cache_key(file_sha256(checkpoint), settings)}.json"
        if wanted in files:
            data = _read(wanted)
            if data is not None:
                return strip_cache_info(data), wanted, "verified"
        if files:
            return (
                None,
                None,
                (
                    f"{len(files)} cached result(s) in {folder} are for other weights "
                    "or another eval config (stale)"
                ),
            )
        return None, None, "no cached test result"
    if files:
        data = _read(files[-1])
        if data is not None:
            return strip_cache_info(data), files[-1], "unverified"
    return None, None, "no cached test result"


def store(
    run_dir: Path,
    checkpoint: Path,
    settings: dict[str, Any],
    result: dict[str, Any],
    records: Records | None = None,
) -> Path:
    """Write a result under its key, atomically (temp file in the folder, fsync, rename).

    ``records`` (tsrx.records.Records) go beside it as ``<stem>-<key>.records.npz``, written
    first: a result file present means its records are complete too.
    """
    sha = file_sha256(checkpoint)
    path = Path(run_dir) / "eval" / f"{Path(checkpoint).stem}-{cache_key(sha, settings)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if records is not None:
        from tsrx.records import write_records
        from tsrx.runfiles import records_beside

        write_records(records_beside(path), records)
    body: dict[str, Any] = dict(result)
    body["cache"] = {"checkpoint": str(checkpoint), "sha256": sha, "settings": settings}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        from tsrx.runfiles import dumps

        f.write(dumps(body) + "\n")  # standard JSON: a NaN is null
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
