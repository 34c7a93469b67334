"""A run directory's files: their names, and reading and writing them, in one place, no torch.

Every file name of a run directory is a constant here (``CONFIG``, ``METRICS``, ``LAST``...);
other modules name them through these, never as literals.

Every writer (launcher, trainer, ``tsrx eval``, report cache) goes through
:func:`atomic_write_text` / :func:`atomic_write_bytes`: a temp file in the same folder,
fsync, rename, so a reader never sees half a file. A full disk is a :class:`DiskFullError`
naming the path and the bytes the write needed, and the temp file is removed. Readers of
``meta.json`` / ``status.json`` / ``summary.json`` get the content or a
:class:`DamagedRunFile` naming the file, what was expected and what to do: never a
``TypeError`` three calls later.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import math
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from tsrx.errors import TsrxError

# -- the run directory's names (docs/architecture.md, "Run directory") -------------------
CONFIG = "config.toml"  # the resolved config, written before the first step
META = "meta.json"  # experiment, run, grid point, jobs (submissions and starts)
STATUS = "status.json"  # the trainer's state, step and error
SUMMARY = "summary.json"  # best checkpoint per selector, final evaluation
METRICS = "metrics.jsonl"  # one JSON object per line: run, train, val
LAST = "last.pth"  # the resumable checkpoint
EVAL_DIR = "eval"  # cached test results, <checkpoint stem>-<key>.json
LOGS_DIR = "logs"  # rank<N>.log links to the job's logs
TENSORBOARD_DIR = "tensorboard"
SUPERSEDED_DIR = "superseded"  # outputs moved aside by --force
WRITER_LOCK = ".writer.lock"  # the one writer's flock and record (tsrx.writer)
META_LOCK = ".meta.lock"  # serialises meta.json updates
SUBMITIT_DIR = "submitit"  # beside an experiment's runs: the launcher's job folders
# Any of these marks a folder as a run directory.
RUN_FILES = (CONFIG, META, STATUS, SUMMARY, METRICS)
STATES = ("running", "completed", "failed", "preempted")


def rank_log(run_dir: Path, rank: int) -> Path:
    """``logs/rank<N>.log``: the link to rank N's log of the current job."""
    return Path(run_dir) / LOGS_DIR / f"rank{rank}.log"


# per-image records of evaluations (tsrx.records): one file per validation and final evaluation
# of a training run, and one beside each cached or --json result (``x.json`` -> ``x.records.npz``)
RECORDS_DIR = "records"
RECORDS_SUFFIX = ".records.npz"


def validation_records(run_dir: Path, step: int) -> Path:
    """The per-image records of the validation at ``step`` (what selectors' results came from)."""
    return Path(run_dir) / RECORDS_DIR / f"val-step{int(step):08d}.npz"


def final_records(run_dir: Path, step: int) -> Path:
    """The per-image records of a run's final evaluation (summary.json's ``final``)."""
    return Path(run_dir) / RECORDS_DIR / f"final-step{int(step):08d}.npz"


def records_beside(json_path: Path) -> Path:
    """Where the records of a result JSON live: ``x.json`` -> ``x.records.npz``."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + RECORDS_SUFFIX)


class DamagedRunFile(TsrxError):
    """A run file exists but does not hold what tsrx wrote there."""


class DiskFullError(TsrxError):
    """A write found no space left on the device."""


class ReadOnlyRunDir(TsrxError):
    """A command that must write a run directory found it read-only."""


def is_read_only(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def read_only_error(path: Path, exc: BaseException, doing: str) -> ReadOnlyRunDir:
    """'<run dir> is read-only': what needed to write there, and what to do instead."""
    folder = Path(path).parent
    why = (
        "a read-only filesystem"
        if getattr(exc, "errno", None) == errno.EROFS
        else "no write permission"
    )
    return ReadOnlyRunDir(
        f"run directory {folder} cannot be written ({why}: {Path(path).name}): {doing} writes "
        f"its status, metrics and checkpoints there. Nothing was changed. Copy it somewhere "
        f"writable (cp -r {folder} NEW) and run the command on the copy, or make it writable"
    )


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- writing ------------------------------------------------------------------------------
def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size}"


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path: Path, needed: int | None, exc: BaseException) -> DiskFullError:
    """'no space left on device' with the path, what the write needed and what is free."""
    reason = (
        "disk quota exceeded"
        if getattr(exc, "errno", None) == errno.EDQUOT
        else ("no space left on device")
    )
    return DiskFullError(
        f"{reason} writing {path}: the write needed {_human(needed)}, "
        f"{_human(_free_bytes(Path(path).parent))} free on that filesystem. The previous "
        f"version of the file (if any) is kept; free some space and run the same command again"
    )


# ``.<name>.tsrx-<host>-<pid>.tmp``: the cleaner deletes only what matches this exactly, so a
# user's ``.my_notes.tmp`` in a run directory is never touched, and the host and pid name the
# writer, so a temp file of a writer still alive (a submitter updating meta.json) is kept.
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tsrx-(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.tmp$")
# A temp file written on another host: its writer cannot be asked; after this long it is dead.
FOREIGN_TEMP_AGE_S = 3600


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"


def temp_name(path: Path) -> Path:
    """``.<name>.tsrx-<host>-<pid>.tmp`` beside ``path``: :func:`clean_stale_temps` knows its
    writer, and no file tsrx did not write matches the pattern."""
    return path.with_name(f".{path.name}.tsrx-{_host()}-{os.getpid()}.tmp")


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Temp file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if is_disk_full(exc):
            raise disk_full_error(path, len(data), exc) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _finite(obj: Any) -> Any:
    """NaN / inf -> None: strict JSON has no NaN, and a NaN metric is no result."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps(data: Any, indent: int | None = 2, default: Any = str) -> str:
    """Standard JSON (no bare NaN / Infinity: those become null)."""
    return json.dumps(_finite(data), indent=indent, default=default, allow_nan=False)


def atomic_json(path: Path, data: Any, default: Any = str) -> None:
    atomic_write_text(Path(path), dumps(data, default=default) + "\n")


def write_status(
    run_dir: Path, state: str, step: int, total: int, error: str | None = None
) -> None:
    """``status.json``. When even a failure cannot be written atomically (a full disk), the
    old file is overwritten in place: a short JSON fits in the blocks the truncation frees,
    so the run is not left saying "running" forever."""
    path = Path(run_dir) / STATUS
    data = {
        "state": state,
        "step": step,
        "total_steps": total,
        "updated": utc_now(),
        "error": error,
    }
    try:
        atomic_json(path, data)
    except DiskFullError:
        if state != "failed":
            raise
        text = dumps(data, indent=None).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove the temp files (:func:`temp_name`) that writers which died left in ``folder``.

    Only names of that exact pattern are candidates: any other file (``.my_notes.tmp``) is
    the user's. A temp file whose writer is alive on this host is kept (a submitter may be
    writing meta.json); one from another host is kept until it is an hour old. Call it
    holding the run's writer lock."""
    removed = []
    host, now = _host(), time.time()
    for p in Path(folder).glob(".*.tsrx-*.tmp"):
        m = TEMP_RE.match(p.name)
        if m is None:
            continue
        pid = int(m["pid"])
        if m["host"] != host:
            try:
                if now - p.stat().st_mtime < FOREIGN_TEMP_AGE_S:
                    continue
            except OSError:
                continue
        elif pid != os.getpid() and _pid_alive(pid):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- reading ------------------------------------------------------------------------------
@overload
def read_json(path: Path, *, what: str, missing: dict[str, Any]) -> dict[str, Any]: ...
@overload
def read_json(path: Path, *, what: str, missing: None = None) -> dict[str, Any] | None: ...
def read_json(
    path: Path, *, what: str, missing: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The JSON object in ``path`` (``missing`` when there is no file); DamagedRunFile otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return missing
    except OSError as exc:
        raise DamagedRunFile(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedRunFile(
            f"{path}: the {what} is not text (binary data, {len(raw)} bytes); "
            f"expected a JSON object. {_advice(path)}"
        ) from None
    except json.JSONDecodeError as exc:
        raise DamagedRunFile(
            f"{path}: the {what} is not valid JSON ({exc.msg} at line "
            f"{exc.lineno}); expected a JSON object. {_advice(path)}"
        ) from None
    if not isinstance(data, dict):
        raise DamagedRunFile(
            f"{path}: the {what} holds a JSON {type(data).__name__}, expected an "
            f"object. {_advice(path)}"
        )
    return data


def _advice(path: Path) -> str:
    if path.name == META:
        return (
            f"Move it aside (mv {path} {path}.bad) and run the command again: tsrx writes a "
            "new one (the job history it held is lost)"
        )
    return f"Move it aside (mv {path} {path}.bad): tsrx writes it again"


def _expect(
    path: Path, data: dict[str, Any], key: str, types: tuple[type, ...], expected: str
) -> None:
    if key in data and data[key] is not None and not isinstance(data[key], types):
        raise DamagedRunFile(
            f"{path}: {key!r} should be {expected}, got {data[key]!r}. {_advice(path)}"
        )


def read_meta(run_dir: Path) -> dict[str, Any]:
    """``meta.json`` ({} when absent), its shape checked: ``jobs`` a list of objects."""
    path = Path(run_dir) / META
    meta = read_json(path, what="run's metadata", missing={})
    _expect(path, meta, "jobs", (list,), "a list of job records")
    for i, job in enumerate(meta.get("jobs") or []):
        if not isinstance(job, dict):
            raise DamagedRunFile(
                f"{path}: jobs[{i}] should be a job record (an object), got "
                f"{job!r}. {_advice(path)}"
            )
    for key in ("experiment", "run", "submitit_folder"):
        _expect(path, meta, key, (str,), "a string")
    _expect(path, meta, "point", (dict,), "an object")
    return meta


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json`` ({} when absent), its shape checked."""
    path = Path(run_dir) / STATUS
    status = read_json(path, what="run's status", missing={})
    _expect(path, status, "state", (str,), f"one of {', '.join(STATES)}")
    for key in ("step", "total_steps"):
        _expect(path, status, key, (int,), "an integer")
    return status


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` (None when absent), its shape checked: ``best`` an object of selector
    records (objects, ``result`` an object), ``final`` an object or null."""
    path = Path(run_dir) / SUMMARY
    summary = read_json(path, what="run's summary", missing=None)
    if summary is None:
        return None
    _expect(path, summary, "best", (dict,), "an object: selector name -> its best checkpoint")
    _expect(path, summary, "final", (dict,), "the final evaluation (an object) or null")
    for name, best in (summary.get("best") or {}).items():
        if not isinstance(best, dict):
            raise DamagedRunFile(
                f"{path}: best.{name} should be an object (step, result, file), got "
                f"{best!r}. {_advice(path)}"
            )
        _expect(path, best, "result", (dict,), "an evaluation result (an object)")
        _expect(path, best, "step", (int,), "an integer")
    return summary


@dataclass(frozen=True)
class MetricsLine:
    """One line of metrics.jsonl: its number, its text, and its record or what is wrong."""

    number: int
    text: str
    record: dict[str, Any] | None
    problem: str | None


def _decode_lines(path: Path, raw: bytes, what: str) -> list[str]:
    """The text lines of ``raw``; a last line cut inside a character (a writer that died
    mid-line) is dropped, anything else that is not UTF-8 is a DamagedRunFile."""
    try:
        return raw.decode("utf-8").split("\n")
    except UnicodeDecodeError as exc:
        if b"\n" not in raw[exc.start :]:  # the last line only: torn, not damaged
            return raw[: raw.rfind(b"\n") + 1].decode("utf-8", errors="strict").split("\n")
        raise DamagedRunFile(
            f"{path}: the {what} is not text (binary data at byte {exc.start} of "
            f"{len(raw)}); expected one JSON object per line. {_advice(path)}"
        ) from None


def metrics_lines(run_dir: Path, tail_bytes: int | None = None) -> Iterator[MetricsLine]:
    """Every line of ``metrics.jsonl`` (or of its last ``tail_bytes``), parsed: the one parser
    of the file (report, status, curves and the trainer's resume all read it through here).

    A torn last line (a run writing right now, or killed mid-line) comes with neither record
    nor problem; a line that is not JSON, or JSON but not an object (``42``), comes with a
    problem ``file:line: what; expected``. A file that is not text is a
    :class:`DamagedRunFile`. Absent: nothing.
    """
    path = Path(run_dir) / METRICS
    try:
        with open(path, "rb") as f:
            if tail_bytes is None:
                raw, cut = f.read(), False
            else:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - tail_bytes))
                raw, cut = f.read(), size > tail_bytes
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DamagedRunFile(
            f"{path}: cannot read the run's metrics ({exc.strerror or exc})"
        ) from None
    if cut:  # the first line is probably partial
        raw = raw[raw.find(b"\n") + 1 :] if b"\n" in raw else b""
    lines = _decode_lines(path, raw, "run's metrics")
    where = f" (of its last {tail_bytes} bytes)" if cut else ""
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            problem = None
            if i != last:
                problem = (
                    f"{path}:{i + 1}{where}: not JSON ({exc}); expected one JSON object per line"
                )
            yield MetricsLine(i + 1, line, None, problem)
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step", 0), int):
            got = (
                f"a JSON {type(rec).__name__} ({line.strip()[:40]})"
                if not isinstance(rec, dict)
                else f"step {rec.get('step')!r}"
            )
            yield MetricsLine(
                i + 1,
                line,
                None,
                f"{path}:{i + 1}{where}: {got}; expected an object per line (a run, train or "
                "val record with an integer step)",
            )
            continue
        yield MetricsLine(i + 1, line, rec, None)


def read_metrics(
    run_dir: Path, tail_bytes: int | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """``metrics.jsonl`` as (records, problems): :func:`metrics_lines` without the bad lines,
    each of which is named in ``problems`` (and skipped)."""
    records, problems = [], []
    for line in metrics_lines(run_dir, tail_bytes):
        if line.record is not None:
            records.append(line.record)
        elif line.problem is not None:
            problems.append(line.problem + ", skipped")
    return records, problems


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """``config.toml`` as a raw table (None when absent); DamagedRunFile when it is not text
    or not TOML, naming the file, the line and what was expected."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = Path(run_dir) / CONFIG
    what = "expected the run's resolved config (TOML, written by tsrx)"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DamagedRunFile(
            f"{path}: cannot read the run's config ({exc.strerror or exc})"
        ) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DamagedRunFile(
            f"{path}: not text (binary data at byte {exc.start} of {len(raw)}); {what}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise DamagedRunFile(f"{path}: not valid TOML ({exc}); {what}") from None


@contextmanager
def meta_lock(run_dir: Path) -> Iterator[None]:
    """Serialise meta.json updates (submitter and job attempts may overlap)."""
    path = Path(run_dir) / META_LOCK
    try:
        lock = open(path, "a")  # noqa: SIM115 (closed below)
    except OSError as exc:
        if is_read_only(exc):
            raise read_only_error(
                path, exc, "updating its meta.json (a submit or a resume)"
            ) from None
        raise
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def update_meta(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into meta.json atomically; returns the new content."""
    run_dir = Path(run_dir)
    with meta_lock(run_dir):
        meta = read_meta(run_dir)
        meta.update(changes)
        atomic_write_text(run_dir / META, dumps(meta) + "\n")
    return meta
