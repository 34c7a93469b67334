"""A study: an experiment and the upstream stages its ``needs`` name, submitted in order.

``tsrx submit FILE`` plans every stage (upstream first), then submits what is left:
completed runs are done, runs already queued or running stay as they are, everything
else (new, failed, cancelled) is submitted and resumes from its ``last.pth``. On Slurm a
dependant waits with ``--dependency=afterok:<upstream job ids>`` and
``--kill-on-invalid-dep=yes`` (a failed upstream cancels it, so it never starts), and the
command returns at once. Locally the runs go one after another; a run whose upstream did
not complete is not started.

Each run's ``meta.json`` records its upstream run directories (``needs``), so
``tsrx status FILE`` can show the study, and why a run waits, from files alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsrx.config.needs import records
from tsrx.errors import TsrxError
from tsrx.launch.submit import Plan, PlannedRun, Submitted
from tsrx.runfiles import CONFIG

QUEUED = ("pending", "queued", "running")
BROKEN = ("failed", "cancelled", "timeout")


@dataclass
class StudyRun:
    """One run of the study and what submitting does with it."""

    planned: PlannedRun
    stage: Plan
    upstream: list[StudyRun] = field(default_factory=list)
    state: str = "not submitted"  # where it stands now (tsrx.launch.status)
    job_id: str | None = None
    todo: str = "submit"  # "done", "queued", "submit", "blocked"

    @property
    def label(self) -> str:
        return f"{self.stage.experiment}/{self.planned.spec.name}"

    @property
    def run_dir(self) -> Path:
        return self.planned.run_dir


@dataclass
class Study:
    file: Path
    launcher: str
    stages: list[Plan]  # upstream first
    runs: list[StudyRun]

    def of(self, stage: Plan) -> list[StudyRun]:
        return [r for r in self.runs if r.stage is stage]


def has_needs(file: str | Path) -> bool:
    """Whether an experiment file (with its extends) names upstream stages; no plugins load."""
    from tsrx.config.load import load_with_extends

    raw, _ = load_with_extends(Path(file))
    return bool(raw.get("needs"))


def _stages(exp: Any) -> list[tuple[Any, list[Any]]]:
    """(experiment, the runs of it the study needs), upstream before downstream."""
    order: list[Path] = []
    exps: dict[Path, Any] = {}
    wanted: dict[Path, dict[str, Any]] = {}

    def visit(e: Any, specs: list[Any]) -> None:
        key = Path(e.file).resolve()
        exps.setdefault(key, e)
        bucket = wanted.setdefault(key, {})
        for spec in specs:
            bucket.setdefault(spec.name, spec)
            for up in spec.waits:
                visit(e.upstream[up.name], [up.spec])
        if key not in order:
            order.append(key)

    visit(exp, exp.runs)
    return [(exps[k], list(wanted[k].values())) for k in order]


def plan_study(
    file: str | Path,
    launcher: str | None = None,
    sets: list[str] | None = None,
    only: list[str] | None = None,
    force: bool = False,
) -> Study:
    """Load the experiment and its upstream stages; decide what each run needs done."""
    from tsrx.launch.status import collect
    from tsrx.launch.submit import load, plan_runs

    exp = load(file, launcher, sets, only)
    stages: list[Plan] = []
    runs: list[StudyRun] = []
    by_dir: dict[Path, StudyRun] = {}
    for e, specs in _stages(exp):
        p = plan_runs(e, specs, Path(e.file), force=force)
        stages.append(p)
        for planned in p.runs:
            sr = StudyRun(planned, p)
            ups = dict.fromkeys(Path(u.run_dir) for u in planned.spec.waits)
            sr.upstream = [by_dir[d] for d in ups]
            by_dir[Path(planned.run_dir)] = sr
            runs.append(sr)
    kinds = {p.launcher for p in stages}
    if len(kinds) > 1:
        raise TsrxError(
            f"{file}: the stages ask for different launchers ({', '.join(sorted(kinds))}); "
            "pick one with --launcher"
        )
    existing = [r for r in runs if (r.run_dir / CONFIG).is_file()]
    for r, row in zip(existing, collect([r.run_dir for r in existing])):
        r.state, r.job_id = row.state, row.job_id
    for r in runs:
        if r.planned.action.startswith(("refused", "replace")):
            r.todo = "submit"
        elif r.state == "completed":
            r.todo = "done"
        elif r.state in QUEUED:
            r.todo = "queued"
    _check_upstream_files(runs)
    return Study(Path(file), kinds.pop(), stages, runs)


def _check_upstream_files(runs: list[StudyRun]) -> None:
    """A completed upstream must hold the checkpoint its dependants load."""
    problems = []
    for r in runs:
        for up in r.planned.spec.waits:
            if not up.loads:
                continue  # a need that only orders the stages loads nothing
            need = up.name
            src = next(s for s in r.upstream if Path(s.run_dir) == Path(up.run_dir))
            if src.todo == "done" and not Path(up.checkpoint).is_file():
                problems.append(
                    f"{r.label} needs {up.checkpoint} ({need}: {up.select}), but "
                    f"{src.label} completed without writing it (did its selector "
                    "ever fire? a best_acc selector needs a recognizer or a judge)"
                )
    if problems:
        raise TsrxError("\n".join(problems))


def dependency_ids(r: StudyRun) -> list[str]:
    """Job ids this run must wait for: upstream runs queued now or submitted by this call."""
    return [u.job_id for u in r.upstream if u.todo in ("queued", "submit") and u.job_id]


def with_dependency(params: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """Slurm parameters plus ``--dependency=afterok:...`` and ``--kill-on-invalid-dep=yes``."""
    if not ids:
        return params
    extra = dict(params.get("additional_parameters") or {})
    extra["dependency"] = "afterok:" + ":".join(ids)
    extra["kill_on_invalid_dep"] = "yes"
    return {**params, "additional_parameters": extra}


def _sub_plan(stage: Plan, runs: list[StudyRun]) -> Plan:
    return Plan(
        stage.experiment, stage.file, stage.launcher, stage.runs_dir, [r.planned for r in runs]
    )


def _refuse_conflicts(study: Study, command: list[str] | None) -> None:
    """Every run directory holding another config is reported before anything is submitted."""
    from tsrx.launch.rundir import prepare_run_dir

    msgs = []
    for r in study.runs:
        if r.todo == "submit" and r.planned.action.startswith("refused"):
            try:
                prepare_run_dir(r.planned.spec, r.stage.runs_dir, command=command)
            except TsrxError as exc:
                msgs.append(str(exc))
    if msgs:
        raise TsrxError("\n".join(msgs))


def submit_study(
    study: Study,
    *,
    force: bool = False,
    command: list[str] | None = None,
    wait_local: Callable[[Submitted], None] | None = None,
    on_event: Callable[[StudyRun, str], None] | None = None,
    poll_s: float = 2.0,
) -> list[StudyRun]:
    """Submit what is left of the study (see the module docstring); returns every run."""
    from tsrx.launch.rundir import prepare_run_dir
    from tsrx.launch.status import collect
    from tsrx.launch.submit import _check_sbatch, mark_queued, submit
    from tsrx.runfiles import update_meta

    if study.launcher == "slurm":
        _check_sbatch()
    _refuse_conflicts(study, command)
    for r in study.runs:  # every run directory exists and names its upstream before any job runs
        if r.todo == "submit":
            prepare_run_dir(r.planned.spec, r.stage.runs_dir, force=force, command=command)
            update_meta(r.run_dir, needs=records(r.planned.spec))
            if study.launcher == "local":
                mark_queued(r.run_dir)
    event = on_event or (lambda r, what: None)

    def adopt(u: StudyRun) -> None:
        """Wait for a job this call did not start (an earlier ``tsrx submit`` killed before its
        job ended): its dependants start when it completes, as if this call had run it."""
        event(u, "adopted")
        while True:
            row = collect([u.run_dir])[0]
            if row.state not in QUEUED:
                break
            time.sleep(poll_s)
        u.state = row.state
        u.todo = "done" if row.state == "completed" else "submit"
        event(u, row.state)

    for stage in study.stages:
        todo = [r for r in study.of(stage) if r.todo == "submit"]
        for r in study.of(stage):
            if r.todo != "submit":
                event(r, r.todo)
        if study.launcher == "slurm":
            if not todo:
                continue
            for r in todo:
                r.planned.params = with_dependency(r.planned.params, dependency_ids(r))
            for s in submit(_sub_plan(stage, todo), force=force, command=command):
                r = next(x for x in todo if x.planned is s.run)
                r.job_id = s.job_id
                event(r, "submitted")
            continue
        for r in todo:
            for u in r.upstream:
                if u.todo == "queued" and u.state in QUEUED:
                    adopt(u)
            broken = [u for u in r.upstream if u.state != "completed"]
            if broken:
                r.todo = "blocked"
                event(r, "blocked")
                continue
            for s in submit(
                _sub_plan(stage, [r]), force=force, command=command, wait_local=wait_local
            ):
                r.job_id = s.job_id
            r.state = collect([r.run_dir])[0].state
            event(r, r.state)
    return study.runs


# -- tsrx status FILE ----------------------------------------------------------------
@dataclass
class StudyRow:
    """A run of the study as ``tsrx status FILE`` shows it."""

    stage: str
    status: Any  # tsrx.launch.status.RunStatus
    needs: list[str]  # upstream run directories
    level: int = 0
    state: str = ""  # done, running, queued, waiting, blocked, failed, ...
    why: str = ""


def _needs_of(run_dir: Path) -> list[str]:
    from tsrx.runfiles import read_meta

    needs = read_meta(run_dir).get("needs") or {}
    return [
        str(v.get("run_dir")) for v in needs.values() if isinstance(v, dict) and v.get("run_dir")
    ]


def study_rows(run_dirs: list[Path]) -> list[StudyRow]:
    """The study behind ``run_dirs`` (their upstream runs too), upstream stages first."""
    from tsrx.launch.status import collect

    found: dict[str, list[str]] = {}
    queue = [str(Path(d).absolute()) for d in run_dirs]
    while queue:
        d = queue.pop(0)
        if d in found:
            continue
        found[d] = _needs_of(Path(d))
        queue.extend(u for u in found[d] if u not in found)
    dirs = [d for d in found if (Path(d) / CONFIG).is_file()]
    statuses = dict(zip(dirs, collect([Path(d) for d in dirs])))
    levels: dict[str, int] = {}

    def level(d: str, seen: tuple[str, ...] = ()) -> int:
        if d not in levels:
            ups = [u for u in found.get(d, []) if u not in seen]
            levels[d] = 1 + max((level(u, (*seen, d)) for u in ups), default=-1)
        return levels[d]

    rows = {d: StudyRow(Path(d).parent.name, statuses[d], found[d], level(d)) for d in dirs}
    ordered = sorted(rows.values(), key=lambda r: (r.level, r.stage, r.status.run))
    for row in ordered:
        _explain(row, rows)
    return ordered


def _explain(row: StudyRow, rows: dict[str, StudyRow]) -> None:
    st = row.status
    ups = [(u, rows.get(u)) for u in row.needs]

    def name(u: str) -> str:
        return f"{Path(u).parent.name}/{Path(u).name}"

    bad = [u for u, r in ups if r is None or r.state in (*BROKEN, "blocked")]
    waiting = [u for u, r in ups if r is not None and r.state != "done"]
    started = st.elapsed_s is not None or st.step not in (None, 0)
    if st.state == "completed":
        row.state = "done"
    elif st.state == "running":
        row.state = "running"
    elif (
        bad
        and not started
        and st.state
        in (
            "pending",
            "queued",
            "cancelled",
            "not submitted",
            "failed",
        )
    ):
        row.state = "blocked"
        row.why = "never started: upstream " + ", ".join(
            f"{name(u)} {rows[u].state if u in rows else 'missing'}" for u in bad
        )
    elif st.state in ("pending", "queued", "not submitted") and waiting:
        row.state = "waiting"
        row.why = "waits on " + ", ".join(name(u) for u in waiting)
    elif st.state in ("pending", "queued"):
        row.state = "queued"
    else:
        row.state = st.state
        row.why = st.error or ""


def study_table(rows: list[StudyRow], width: int | None = None) -> Any:
    """The study's table; at a narrow ``width`` (tsrx.launch.status.NARROW) the metrics and
    rules go and long cells end in an ellipsis: one line per run (``--json`` has it all)."""
    from rich.table import Table
    from rich.text import Text

    from tsrx.launch.status import NARROW, fmt_elapsed

    narrow = width is not None and width < NARROW
    cols = ["stage", "run", "state", "waits on / why", "step", "acc", "psnr", "elapsed", "job"]
    if narrow:
        cols = [c for c in cols if c not in ("acc", "psnr", "elapsed")]
    from rich import box

    t = Table(title="study", box=None if narrow else box.HEAVY_HEAD, pad_edge=not narrow)
    colours = {
        "done": "green",
        "running": "cyan",
        "queued": "yellow",
        "waiting": "yellow",
        "blocked": "red",
        "failed": "red",
        "cancelled": "magenta",
        "timeout": "red",
    }
    lines: list[list[str]] = []
    for r in rows:
        s, m = r.status, r.status.metrics
        step = (
            "-"
            if s.step is None
            else f"{s.step}/{s.total_steps if s.total_steps is not None else '?'}"
        )
        cells = {
            "stage": f"{r.level + 1}: {r.stage}",
            "run": s.run,
            "state": f"[{colours.get(r.state, 'white')}]{r.state}[/]",
            "waits on / why": r.why or "-",
            "step": step,
            "acc": f"{m['acc']:.4f}" if "acc" in m else "-",
            "psnr": f"{m['psnr']:.2f}" if "psnr" in m else "-",
            "elapsed": fmt_elapsed(s.elapsed_s),
            "job": s.job_id or "-",
        }
        lines.append([cells[c] for c in cols])
    widest = [
        max([len(c)] + [len(Text.from_markup(x[i])) for x in lines]) for i, c in enumerate(cols)
    ]
    if narrow:  # fixed columns keep their widest cell; the run name and the reason share the rest
        why = cols.index("waits on / why")
        avail = (width or 0) - sum(w for i, w in enumerate(widest) if i not in (1, why))
        avail -= 2 * len(cols)
        widest[1] = min(widest[1], 24, max(10, avail - 12))
        widest[why] = max(8, avail - widest[1])
    for i, col in enumerate(cols):
        t.add_column(
            col,
            overflow="ellipsis" if narrow else "fold",
            no_wrap=narrow,
            width=widest[i] if narrow else None,
            justify="right" if col in ("step", "acc", "psnr", "elapsed") else "left",
        )
    for line in lines:
        t.add_row(*line)
    return t


def study_json(rows: list[StudyRow]) -> list[dict[str, Any]]:
    from dataclasses import asdict

    return [
        {
            **asdict(r.status),
            "label": r.status.label,
            "stage": r.stage,
            "level": r.level + 1,
            "study_state": r.state,
            "why": r.why,
            "needs": r.needs,
        }
        for r in rows
    ]
