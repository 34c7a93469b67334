"""Run directories: ``runs/<experiment>/<run>/`` owns one resolved config.

A run directory is the unit of resuming: submitting the same config again reuses it
(the trainer resumes from ``last.pth``); a different config is refused, because
resuming a checkpoint under changed settings silently mixes two experiments.
``force`` replaces the config and moves the old outputs (everything but config.toml,
meta.json and the locks: checkpoints, metrics, records, a callback's files) with a copy of
the old config into ``superseded/<UTC time>/`` so the run starts fresh and nothing is
lost; ``new`` leaves the old directory alone and creates ``<run>~2``, ``<run>~3``...

The ``[launcher]`` and ``[slurm]`` tables say where a run computes, not what: changing
them (a partition, a time limit) resumes the run and rewrites its config.toml.
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsrx.errors import TsrxError
from tsrx.runfiles import (
    CONFIG,
    META,
    META_LOCK,
    SUPERSEDED_DIR,
    WRITER_LOCK,
    atomic_write_text,
    dumps,
    meta_lock,
    read_meta,
    update_meta,
    utc_now,
)

if TYPE_CHECKING:
    from tsrx.config.experiment import RunSpec

# What `force` leaves in place: the run's identity and locks. Everything else in the run
# directory is an output of the old config (the trainer's files, per-image records,
# TensorBoard, whatever a user's callback wrote) and moves to superseded/<time>/.
KEPT_BY_FORCE = frozenset({CONFIG, META, SUPERSEDED_DIR, WRITER_LOCK, META_LOCK})
MAX_DIFF_CHARS = 200_000
PLACEMENT_TABLES = ("launcher", "slurm")


def _load_toml(text: str) -> dict[str, Any]:
    from tsrx.config.load import tomllib  # tomli before Python 3.11

    return tomllib.loads(text)


def config_differences(
    old: dict[str, Any], new: dict[str, Any], prefix: str = "", ignore: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ, with (old, new); a missing side is ``None``."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted((set(old) | set(new)) - set(ignore)):
        dotted = f"{prefix}.{key}" if prefix else key
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_differences(a, b, dotted))
        elif a != b:
            out.append((dotted, a, b))
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """Commit and uncommitted diff of the repository the user works in (None outside git)."""
    cwd = Path(cwd or Path.cwd())
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {"commit": None, "dirty": None, "diff": None}
    diff = _git(["diff", "HEAD"], cwd) or ""
    truncated = len(diff) > MAX_DIFF_CHARS
    return {
        "commit": commit.strip(),
        "dirty": bool(diff),
        "diff_truncated": truncated,
        "diff": diff[:MAX_DIFF_CHARS],
    }


def versions(run_plugins: list[str] | None = None) -> dict[str, Any]:
    """tsrx, Python and every installed tsrx plugin distribution, read without importing them."""
    import importlib.metadata as md
    import platform

    from tsrx import __version__
    from tsrx.plugins import ENTRY_POINT_GROUP

    dists = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            dists[ep.dist.name] = ep.dist.version
    return {
        "tsrx": __version__,
        "python": platform.python_version(),
        "plugin_packages": dict(sorted(dists.items())),
        "experiment_plugins": list(run_plugins or []),
    }


def record_job(run_dir: Path, job_id: str, launcher: str, **extra: Any) -> None:
    """Append one attempt (a submission or a requeued start) to meta.json's ``jobs``."""
    run_dir = Path(run_dir)
    if launcher.startswith("local") and str(job_id).isdigit() and "process" not in extra:
        # a PID is reused once its process ends: record what tells them apart (tsrx cancel)
        from tsrx.process import identity

        extra["process"] = identity(int(job_id))
    with meta_lock(run_dir):
        meta = read_meta(run_dir)
        jobs = meta.setdefault("jobs", [])
        jobs.append({"job_id": str(job_id), "launcher": launcher, "time": utc_now(), **extra})
        atomic_write_text(run_dir / META, dumps(meta) + "\n")


def _supersede(run_dir: Path) -> Path | None:
    present = sorted(p for p in run_dir.iterdir() if p.name not in KEPT_BY_FORCE)
    if not present:
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = run_dir / SUPERSEDED_DIR / stamp
    dest.mkdir(parents=True)
    for p in present:
        os.replace(p, dest / p.name)
    # the config those outputs came from (config.toml itself is rewritten with the new one)
    shutil.copy2(run_dir / CONFIG, dest / CONFIG)
    return dest


def _free_suffix(run_dir: Path, config_text: str) -> Path:
    """``<run>~2``, ``<run>~3``...: the first that is unused or already holds this config."""
    wanted = _load_toml(config_text)
    for i in range(2, 10_000):
        cand = run_dir.with_name(f"{run_dir.name}~{i}")
        cfg = cand / CONFIG
        if not cfg.exists() or not config_differences(
            _load_toml(cfg.read_text(encoding="utf-8")), wanted, ignore=PLACEMENT_TABLES
        ):
            return cand
    raise TsrxError(f"{run_dir}: no free '~N' suffix left for --new")


def prepare_run_dir(
    run: RunSpec,
    runs_dir: Path,
    *,
    force: bool = False,
    new: bool = False,
    resume: bool = False,
    command: list[str] | None = None,
) -> Path:
    """Create or reuse ``runs_dir/<experiment>/<run.name>/`` for ``run`` (a RunSpec).

    Same config: returns the existing directory (resume). Different config: TsrxError
    naming both and the differing keys, unless ``force`` or ``new`` (see module doc).
    ``resume``: the directory must exist, and ``train.steps`` (only) may differ: a run
    continued to more steps (``tsrx train --resume --set train.steps=N``; the trainer
    resumes from ``last.pth`` exactly as after a stop).
    """
    from tsrx.config.toml_write import dumps

    if force and new:
        raise TsrxError("--force and --new exclude each other: replace the run, or start a new one")
    if resume and (force or new):
        raise TsrxError("--resume continues the existing run; --force and --new start another one")
    text = dumps(run.config)
    run_dir = Path(runs_dir) / run.experiment / run.name
    cfg_path = run_dir / CONFIG
    superseded = None
    supersede = False
    rewrite = not cfg_path.exists()
    continued = None
    if resume and not cfg_path.exists():
        raise TsrxError(
            f"--resume: {run_dir} holds no run to continue (no {CONFIG}); drop --resume to "
            "start it, or pass --runs-dir where the run is"
        )
    if cfg_path.exists():
        old = _load_toml(cfg_path.read_text(encoding="utf-8"))
        diffs = config_differences(old, _load_toml(text), ignore=PLACEMENT_TABLES)
        rewrite = bool(config_differences(old, _load_toml(text)))
        if resume:
            continued = _continuation(run_dir, diffs)
            diffs = []
        if diffs and new:
            run_dir = _free_suffix(run_dir, text)
            cfg_path = run_dir / CONFIG
            rewrite = True
        elif diffs and force:
            supersede = True
        elif diffs:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:12])
            more = f" (and {len(diffs) - 12} more)" if len(diffs) > 12 else ""
            raise TsrxError(
                f"run directory {run_dir} belongs to a different config: {cfg_path} differs from "
                f"run {run.name!r} of experiment {run.experiment!r} in {len(diffs)} key(s): "
                f"{shown}{more}. Use --force to replace it (old outputs move to superseded/) "
                f"or --new to start a new run directory beside it"
            )
    if cfg_path.exists():
        refuse_if_in_use(run_dir)  # one writer per run directory (tsrx.writer)
    if supersede:
        superseded = _supersede(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rewrite:
        atomic_write_text(cfg_path, text)
    meta = read_meta(run_dir)
    changes: dict[str, Any] = {
        "experiment": run.experiment,
        "run": run.name,
        "point": run.point,
        "command": command if command is not None else list(sys.argv),
        "command_line": shlex.join(command if command is not None else sys.argv),
        "git": git_state(),
        "versions": versions(run.plugins),
        "updated": utc_now(),
    }
    if not meta:
        changes["created"] = changes["updated"]
        changes["jobs"] = []
    if superseded is not None:
        changes["superseded"] = meta.get("superseded", []) + [str(superseded.relative_to(run_dir))]
    if continued is not None:
        changes["continued"] = meta.get("continued", []) + [{**continued, "time": utc_now()}]
    update_meta(run_dir, **changes)
    return run_dir


# The keys a continued run (--resume) may change: more steps extend the same trajectory.
CONTINUABLE = ("train.steps",)


def _continuation(run_dir: Path, diffs: list[tuple[str, Any, Any]]) -> dict[str, Any] | None:
    """What --resume changes (``{"train.steps": [old, new]}``), or an error naming the keys
    it may not change; None when nothing differs."""
    other = [(k, a, b) for k, a, b in diffs if k not in CONTINUABLE]
    if other:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in other[:12])
        raise TsrxError(
            f"--resume: run directory {run_dir} differs in {shown}; a continued run may change "
            f"only {', '.join(CONTINUABLE)} (more steps on the same trajectory). Use --force to "
            "replace the run or --new to start a new one beside it"
        )
    return {k: [a, b] for k, a, b in diffs} or None


def refuse_if_in_use(run_dir: Path) -> None:
    """Refuse to (re)start ``run_dir`` while a writer holds it or its last job is queued/running."""
    from tsrx.launch.status import collect
    from tsrx.writer import RunDirBusy, refuse_if_busy

    refuse_if_busy(run_dir, doing="start")
    row = collect([Path(run_dir)])[0]  # asks squeue about a Slurm job
    if row.state in ("pending", "running") and row.job_id:
        raise RunDirBusy(
            f"run directory {run_dir} already has job {row.job_id} ({row.launcher}, {row.state}); "
            "a second job would train the same run at the same time. Wait for it, or stop it "
            f"with `tsrx cancel {run_dir}` first"
        )
