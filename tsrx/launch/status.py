"""Where each run stands, from its directory and the scheduler's records; no torch.

Sources, most trusted first: the trainer's ``status.json`` saying completed; Slurm
(``squeue`` for queued and recent jobs, ``sacct`` when the cluster has accounting);
for local jobs whether the controller process lives; submitit's result file; the
``cancelled`` mark ``tsrx cancel`` leaves in ``meta.json``. Clusters without sacct
forget finished jobs after MinJobAge, so the files alone must still give an answer.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError
from tsrx.runfiles import CONFIG

TERMINAL = ("completed", "failed", "cancelled", "timeout", "damaged")
_SLURM_STATES = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SUSPENDED": "running",
    "STAGE_OUT": "running",
    "SIGNALING": "running",
    "RESIZING": "running",
    "STOPPED": "running",
    "COMPLETED": "completed",
    "CANCELLED": "cancelled",
    "TIMEOUT": "timeout",
    "PREEMPTED": "pending",
    "FAILED": "failed",
    "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
    "SPECIAL_EXIT": "failed",
    "REVOKED": "cancelled",
}


@dataclass
class RunStatus:
    """One row of ``tsrx status``."""

    run: str
    run_dir: str
    state: str
    step: int | None = None
    total_steps: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float | None = None
    job_id: str | None = None
    launcher: str | None = None
    requeues: int = 0
    scheduler_state: str | None = None
    error: str | None = None
    nodes: str | None = None  # the latest attempt's SLURM_JOB_NODELIST (or host), e.g. n[1-2]

    @property
    def label(self) -> str:
        return self.state + (f" (requeued {self.requeues}x)" if self.requeues else "")


# -- finding run directories ----------------------------------------------------------
def _experiment_runs_dir(toml: Path) -> Path:
    """runs/<name> of an experiment file, read without resolving (no plugins, no torch)."""
    from tsrx.config.load import load_with_extends

    raw, _ = load_with_extends(toml)
    name = raw.get("name")
    if not isinstance(name, str):
        name = toml.stem
    runs_dir = (raw.get("launcher") or {}).get("runs_dir", "runs")
    return Path(runs_dir) / name


def find_run_dirs(target: str | Path | None = None) -> list[Path]:
    """Run directories named by an experiment file, a runs folder, an experiment folder or a run."""
    path = Path(target) if target else Path("runs")
    if path.suffix == ".toml" and path.is_file():
        path = _experiment_runs_dir(path)
        if not path.is_dir():
            return []
    if not path.exists():
        raise TsrxError(f"{path}: no such run directory, runs folder or experiment file")
    if (path / CONFIG).is_file():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{CONFIG}"))
    found += sorted(p.parent for p in path.glob(f"*/*/{CONFIG}"))
    if not found and not path.is_dir():
        raise TsrxError(f"{path}: not a run directory (no config.toml) nor a folder of runs")
    return found


# -- reading files --------------------------------------------------------------------
def _read_run_files(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(meta, status, problem): a damaged file gives empty content and its message."""
    from tsrx.runfiles import DamagedRunFile, read_meta, read_status

    meta, status, problems = {}, {}, []
    try:
        meta = read_meta(run_dir)
    except DamagedRunFile as exc:
        problems.append(str(exc))
    try:
        status = read_status(run_dir)
    except DamagedRunFile as exc:
        problems.append(str(exc))
    return meta, status, "; ".join(problems) or None


def latest_metrics(
    run_dir: Path, problems: list[str] | None = None
) -> tuple[dict[str, Any], int | None]:
    """(average of the last validation, last step seen) from the end of metrics.jsonl; what
    is damaged there goes to ``problems``."""
    from tsrx.runfiles import DamagedRunFile, read_metrics

    try:
        lines, bad = read_metrics(run_dir, tail_bytes=256 * 1024)
    except DamagedRunFile as exc:
        lines, bad = [], [str(exc)]
    if problems is not None:
        problems += bad
    val = next((x for x in reversed(lines) if x.get("kind") == "val"), None)
    step = next((x.get("step") for x in reversed(lines) if "step" in x), None)
    metrics = {}
    if val:
        avg = (val.get("result") or {}).get("average") or {}
        metrics = {
            k: avg[k]
            for k in ("acc", "psnr", "ssim")  # NaN (older files): no result
            if isinstance(avg.get(k), (int, float)) and avg[k] == avg[k]
        }
        metrics["val_step"] = val.get("step")
    return metrics, step


def _parse_time(s: Any) -> float | None:
    if isinstance(s, (int, float)):
        return float(s)
    if not isinstance(s, str):
        return None
    try:
        t = _dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _result_kind(submitit_folder: str | None, job_id: str) -> str | None:
    """'success' or 'error' from submitit's rank-0 result file, without unpickling it.

    Unpickling could import whatever the result holds (torch); the tag is a short
    string at the start of the pickled tuple.
    """
    if not submitit_folder:
        return None
    path = Path(submitit_folder) / job_id / f"{job_id}_0_result.pkl"
    try:
        head = path.read_bytes()[:64]
    except OSError:
        return None
    return "success" if b"success" in head else "error" if b"error" in head else None


# -- scheduler ------------------------------------------------------------------------
def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """Slurm state per job id (``123`` or ``123_4``): squeue first, sacct for what it forgot."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    out: dict[str, str] = {}
    text = _run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "-j", ",".join(ids)])
    if text is None:  # squeue fails outright when one id is unknown: ask for our jobs instead
        text = _run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T", "--me"])
    for line in (text or "").splitlines():
        jid, _, state = line.strip().partition("|")
        if jid in ids and state:
            out[jid] = state.split()[0]
    missing = [i for i in ids if i not in out]
    if missing:
        text = _run(
            ["sacct", "-n", "-X", "--parsable2", "-o", "JobID,State", "-j", ",".join(missing)]
        )
        for line in (text or "").splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in missing and state:
                out[jid] = state.split()[0]
    return out


def _alive(pid: str, record: dict[str, Any] | None = None) -> bool:
    """Whether the local job's process lives: the recorded identity (PID + start time) when
    there is one, so that a reused PID does not count."""
    if record and isinstance(record.get("process"), dict):
        from tsrx.process import is_same

        same = is_same(record["process"])
        if same is not None:
            return same
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    # a finished controller that nobody reaped is a zombie: not running
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


# -- one row per run ------------------------------------------------------------------
def run_status(
    run_dir: Path, slurm: dict[str, str] | None = None, now: float | None = None
) -> RunStatus:
    """The row for one run directory; ``slurm`` is :func:`slurm_states` for its job ids."""
    run_dir = Path(run_dir)
    meta, status, damaged = _read_run_files(run_dir)
    notes: list[str] = []
    metrics, metric_step = latest_metrics(run_dir, notes)
    jobs = [j for j in meta.get("jobs", []) if isinstance(j, dict)]
    submits = [j for j in jobs if j.get("event") == "submit"]
    last = submits[-1] if submits else (jobs[-1] if jobs else None)
    job_id = last.get("job_id") if last else None
    launcher = last.get("launcher") if last else None
    starts = [j for j in jobs if j.get("event") == "start" and j.get("job_id") == job_id]
    requeues = max(0, len(starts) - 1)
    row = RunStatus(
        run=meta.get("run") or run_dir.name,
        run_dir=str(run_dir),
        state="not submitted",
        step=status.get("step", metric_step),
        total_steps=status.get("total_steps"),
        metrics=metrics,
        job_id=job_id,
        launcher=launcher,
        requeues=requeues,
        error=damaged or status.get("error") or ("; ".join(notes) or None),
    )
    if damaged:
        row.state = "damaged"
        return row
    if row.total_steps is None:
        cfg = _read_config(run_dir)
        row.total_steps = (cfg.get("train") or {}).get("steps")
    sched = (slurm or {}).get(job_id) if job_id and launcher == "slurm" else None
    row.scheduler_state = sched
    trainer_state = status.get("state")
    cancelled = (
        meta.get("cancelled") and last and str(meta["cancelled"]) >= str(last.get("time", ""))
    )
    queued = _queued_by(meta)
    if queued is not None and trainer_state != "completed":
        # a local submitter that runs the runs one after another has this one still to do
        row.state = "queued"
        row.error = row.error or f"waits its turn in `tsrx submit` (pid {queued})"
    elif job_id is None:
        row.state = trainer_state or "not submitted"
        if meta.get("queued") and row.state == "not submitted":
            row.error = row.error or (
                f"its submitter (pid {meta['queued'].get('pid')}) ended before starting it; "
                "`tsrx submit` of its experiment runs it"
            )
    elif trainer_state == "completed":
        row.state = "completed"
    elif sched is not None:
        row.state = _SLURM_STATES.get(sched, sched.lower())
        if row.state == "completed" and trainer_state == "failed":
            row.state = "failed"
    elif launcher == "local" and _alive(job_id, last):
        row.state = "running" if starts else "pending"
    else:
        kind = _result_kind(meta.get("submitit_folder"), job_id)
        if cancelled:
            row.state = "cancelled"
        elif kind == "error" or trainer_state == "failed":
            row.state = "failed"
        elif kind == "success":
            row.state = "completed"
        elif launcher == "local":
            row.state = "failed" if starts else "cancelled"
            if starts and not row.error:  # the trainer never wrote its end: it was killed
                row.error = (
                    f"its process (pid {job_id}) ended without recording how (killed: "
                    f"SIGKILL, out of memory?) at step {row.step}; `tsrx submit` resumes it"
                )
        else:  # Slurm forgot the job and left no result: the last thing the files say
            row.state = f"unknown (last: {trainer_state or 'submitted'})"
    if starts:
        row.nodes = starts[-1].get("nodes") or starts[-1].get("host")
    restarts = max([int(j.get("restart") or 0) for j in starts] + [0])
    row.requeues = max(requeues, restarts, len(starts) if row.state == "pending" else 0)
    first_start = next(
        (_parse_time(j.get("started") or j.get("time")) for j in jobs if j.get("event") == "start"),
        None,
    )
    if first_start is not None:
        end = _parse_time(status.get("updated")) if row.state in TERMINAL else None
        row.elapsed_s = max(0.0, (end or now or _now()) - first_start)
    return row


def _queued_by(meta: dict[str, Any]) -> int | None:
    """The PID of the live local submitter that queued this run and has not submitted it yet."""
    q = meta.get("queued")
    jobs = [j for j in meta.get("jobs") or [] if isinstance(j, dict)]
    if not isinstance(q, dict) or not isinstance(q.get("jobs"), int):
        return None
    if any(j.get("event") == "submit" for j in jobs[q["jobs"] :]):
        return None
    from tsrx.process import is_same

    return q.get("pid") if is_same(q.get("process")) else None


def _now() -> float:
    return _dt.datetime.now(_dt.timezone.utc).timestamp()


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.toml for its total steps; a damaged one gives {} (its run still shows)."""
    from tsrx.runfiles import DamagedRunFile, read_config

    try:
        return read_config(run_dir) or {}
    except DamagedRunFile:
        return {}


def collect(run_dirs: list[Path]) -> list[RunStatus]:
    """Rows for many runs with one squeue (and at most one sacct) call in all."""
    ids = []
    for d in run_dirs:
        jobs = _read_run_files(Path(d))[0].get("jobs") or []
        subs = [j for j in jobs if j.get("event") == "submit"]
        if subs and subs[-1].get("launcher") == "slurm":
            ids.append(str(subs[-1]["job_id"]))
    states = slurm_states(ids) if ids else {}
    return [run_status(d, states) for d in run_dirs]


# -- output ---------------------------------------------------------------------------
def fmt_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# Below this width the columns a terminal can spare go (nodes, ssim) and the table loses its
# vertical rules, so that each run stays on one line of an 80-column terminal.
NARROW = 120


def table(rows: list[RunStatus], title: str | None = None, width: int | None = None) -> Any:
    """One line per run; ``width`` (the console's) below ``NARROW`` gives the compact form,
    where a long run name ends in an ellipsis instead of wrapping every row."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    narrow = width is not None and width < NARROW
    cols = ["run", "state", "step", "acc", "psnr", "ssim", "elapsed", "job", "nodes"]
    if narrow:
        cols = [c for c in cols if c not in ("ssim", "nodes")]
    t = Table(
        title=title,
        show_lines=False,
        box=None if narrow else box.HEAVY_HEAD,
        pad_edge=not narrow,
        collapse_padding=narrow,
    )
    # runs of several experiments: say which experiment each belongs to
    several = len({Path(r.run_dir).parent for r in rows}) > 1
    colours = {
        "completed": "green",
        "running": "cyan",
        "pending": "yellow",
        "queued": "yellow",
        "failed": "red",
        "cancelled": "magenta",
        "timeout": "red",
        "damaged": "red",
    }
    lines: list[list[str]] = []
    for r in rows:
        m = r.metrics
        step = (
            "-"
            if r.step is None
            else f"{r.step}/{r.total_steps if r.total_steps is not None else '?'}"
        )
        colour = colours.get(r.state, "white")
        name = f"{Path(r.run_dir).parent.name}/{r.run}" if several else r.run
        cells = {
            "run": name,
            "state": f"[{colour}]{r.label}[/]",
            "step": step,
            "acc": f"{m['acc']:.4f}" if "acc" in m else "-",
            "psnr": f"{m['psnr']:.2f}" if "psnr" in m else "-",
            "ssim": f"{m['ssim']:.4f}" if "ssim" in m else "-",
            "elapsed": fmt_elapsed(r.elapsed_s),
            "job": r.job_id or "-",
            "nodes": r.nodes or "-",
        }
        if narrow:
            cells["state"] = f"[{colour}]{r.state}{f' ({r.requeues}x)' if r.requeues else ''}[/]"
        lines.append([cells[c] for c in cols])
    widest = [
        max([len(col)] + [len(Text.from_markup(x[i])) for x in lines]) for i, col in enumerate(cols)
    ]
    # narrow: every column keeps its widest cell and only the run name gives way (an ellipsis);
    # one space between columns (no rules), none at the edges
    room = (width or 0) - sum(widest[1:]) - len(cols) - 1
    for i, col in enumerate(cols):
        t.add_column(
            col,
            justify="right" if col in ("step", "acc", "psnr", "ssim", "elapsed") else "left",
            no_wrap=narrow,
            overflow="ellipsis" if narrow else "fold",
            width=(max(12, min(widest[0], room)) if i == 0 else widest[i]) if narrow else None,
        )
    for line in lines:
        t.add_row(*line)
    return t


def as_json(rows: list[RunStatus]) -> str:
    return json.dumps([{**asdict(r), "label": r.label} for r in rows], indent=2)


def follow(
    run_dirs: list[Path], console: Any, interval_s: float = 5.0, max_wait_s: float | None = None
) -> list[RunStatus]:
    """Redraw the table until every run is finished (or ``max_wait_s`` passes)."""
    import time

    from rich.live import Live

    start = time.monotonic()
    rows = collect(run_dirs)
    with Live(table(rows, width=console.width), console=console, refresh_per_second=1) as live:
        while not all(r.state in TERMINAL for r in rows):
            if max_wait_s is not None and time.monotonic() - start > max_wait_s:
                break
            time.sleep(interval_s)
            rows = collect(run_dirs)
            live.update(table(rows, width=console.width))
    console.print()
    return rows
