"""``tsrx submit``, ``tsrx status``, ``tsrx logs``, ``tsrx cancel``: runs on Slurm or locally."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from tsrx.launch.study import Study, StudyRun
    from tsrx.launch.submit import Plan, PlannedRun, Submitted

SET_HELP = "Override a key, typed by the schema: --set train.steps=100 (repeatable)."


def _differences(runs: list[PlannedRun]) -> tuple[list[str], list[list[str]]]:
    """Keys whose resolved values differ between runs, and each run's values for them."""
    from tsrx.launch.rundir import config_differences

    keys: list[str] = []
    for r in runs[1:]:
        for k, _, _ in config_differences(runs[0].spec.config, r.spec.config):
            if k not in keys:
                keys.append(k)
    from tsrx.config.load import get_dotted

    missing = object()
    rows = [
        [
            "-"
            if (v := get_dotted(r.spec.config, k, missing)) is missing
            else json.dumps(v, default=list)
            for k in keys
        ]
        for r in runs
    ]
    return keys, rows


def _print_plan(plan: Plan, console: Console) -> None:
    from rich.table import Table

    from tsrx.launch.submit import sbatch_script

    how = (
        "one job array" if plan.as_array else f"{len(plan.runs)} job(s)"
    ) + f" via {plan.launcher}"
    console.print(
        f"[bold]{plan.experiment}[/]: {len(plan.runs)} run(s) from {plan.file}, {how}",
        highlight=False,
    )
    t = Table(title="runs")
    for col in ("run", "run directory", "on submit"):
        t.add_column(col)
    for r in plan.runs:
        t.add_row(r.spec.name, str(r.run_dir), r.action)
    console.print(t)
    keys, rows = _differences(plan.runs)
    if keys:
        d = Table(title="resolved config differences between the runs")
        d.add_column("run")
        d.add_column("values")
        for r, vals in zip(plan.runs, rows):
            d.add_row(r.spec.name, "\n".join(f"{k} = {v}" for k, v in zip(keys, vals) if v != "-"))
        console.print(d)
    if plan.launcher == "slurm":
        console.print("[bold]sbatch script[/] (submitit writes this; ids fill in at submission):")
        console.file.flush()
        typer.echo(sbatch_script(plan))
    else:
        for r in plan.runs[:1] if plan.as_array else plan.runs:
            console.print(f"local executor parameters: {r.params}", markup=False, highlight=False)


# A local submit waits on each job: how often it looks whether the job ended, and how often
# it redraws the status table (until 2026-12-07 both every 2 s: up to 2 s idle per run)
POLL_S = 0.2
TABLE_S = 2.0


def _wait_local(console: Console) -> Callable[[Submitted], None]:
    def wait(sub: Submitted) -> None:
        from rich.live import Live

        from tsrx.launch.status import collect, table

        job = sub.job
        try:
            with Live(
                table(collect([sub.run.run_dir]), width=console.width),
                console=console,
                refresh_per_second=1,
            ) as live:
                # the job's end is seen within POLL_S (the next run of a stage starts then);
                # the table, which reads the run directory, is redrawn every TABLE_S
                shown = time.monotonic()
                while not job.done():
                    time.sleep(POLL_S)
                    if time.monotonic() - shown >= TABLE_S:
                        live.update(table(collect([sub.run.run_dir]), width=console.width))
                        shown = time.monotonic()
                live.update(table(collect([sub.run.run_dir]), width=console.width))
            console.print()
        except KeyboardInterrupt:
            job.cancel()
            raise

    return wait


@contextmanager
def _stops_its_jobs(console: Console, file: Path) -> Iterator[None]:
    """A local submitter runs its jobs itself: Ctrl-C or SIGTERM stops the running one
    (``_wait_local`` cancels it) and says so, instead of leaving it behind as an orphan.
    A job this call only waits for (started by an earlier submit) goes on, and it says how
    to stop it. SIGKILL cannot be caught: a resubmit then adopts the orphan (docs/study.md)."""
    import signal

    def terminate(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt:
        console.print(
            f"interrupted: the job this submit was running is stopped (it saves last.pth at "
            f"its next step); runs not started yet were not submitted. `tsrx submit {file}` "
            "goes on from there (`tsrx status` shows each run).",
            highlight=False,
        )
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, old)


def submit(
    file: Path = typer.Argument(..., help="Experiment TOML file."),
    launcher: str | None = typer.Option(
        None, "--launcher", help="slurm or local (default: the file's launcher.type)."
    ),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the runs, their config differences and the sbatch script; submit nothing.",
    ),
    only: list[str] = typer.Option(
        [], "--only", help="Only runs with this name or prefix (repeatable)."
    ),
    follow: bool = typer.Option(False, "--follow", help="Show live progress until all runs end."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace a run directory that holds a "
        "different config (old outputs move to superseded/).",
    ),
    new: bool = typer.Option(
        False,
        "--new",
        help="Put runs whose directory holds a different config into a new directory (<run>~2).",
    ),
) -> None:
    """Create one run directory per grid point and submit them (Slurm array, or locally).

    Slurm: prints the job ids and returns. Local: runs the jobs one after another here.
    Submitting a run again with the same config resumes it from last.pth. A file with
    `needs` is a study: its upstream stages are submitted first (see docs/study.md).
    """
    from tsrx.launch.study import has_needs

    if has_needs(file):
        if new:
            from tsrx.errors import TsrxError

            raise TsrxError(
                f"{file}: --new cannot be used with needs (the stages that load a "
                "run's checkpoints name its directory); use --force"
            )
        return _submit_study(file, launcher, set_, only, dry_run, follow, force)
    from tsrx.cli.console import console
    from tsrx.launch import status as st
    from tsrx.launch.submit import plan as make_plan
    from tsrx.launch.submit import submit as do_submit

    plan = make_plan(file, launcher, set_, only or None, force=force, new=new)
    if dry_run:
        _print_plan(plan, console)
        return

    def announce(sub: Submitted) -> None:
        console.print(
            f"submitted {sub.job_id}  {sub.run.spec.name}  -> {sub.run.run_dir}", highlight=False
        )

    with _stops_its_jobs(console, file) if plan.launcher == "local" else nullcontext():
        done = do_submit(
            plan,
            force=force,
            new=new,
            command=["tsrx", *sys.argv[1:]],
            wait_local=_wait_local(console),
            on_submitted=announce,
        )
    if plan.launcher == "slurm":
        console.print(
            f"{len(done)} job(s) submitted; `tsrx status {file}` shows progress.", highlight=False
        )
        if follow:
            st.follow([s.run.run_dir for s in done], console)
    else:
        rows = st.collect([s.run.run_dir for s in done])
        if len(rows) > 1:
            console.print(st.table(rows, title="all runs", width=console.width))
        bad = [r for r in rows if r.state != "completed"]
        if bad:
            raise typer.Exit(1)


def _print_study_plan(study: Study, console: Console) -> None:
    from rich.table import Table

    from tsrx.launch.study import with_dependency

    t = Table(title=f"study of {study.file}: {len(study.stages)} stage(s), in this order")
    for col in ("stage", "run", "now", "on submit", "waits on"):
        t.add_column(col, overflow="fold")
    for i, stage in enumerate(study.stages, start=1):
        for r in study.of(stage):
            now = r.state + (f" ({r.job_id})" if r.job_id else "")
            what = {"done": "nothing (completed)", "queued": "nothing (in the queue)"}.get(
                r.todo, r.planned.action
            )
            t.add_row(
                f"{i}: {stage.experiment}",
                r.planned.spec.name,
                now,
                what,
                ", ".join(u.label for u in r.upstream) or "-",
            )
    console.print(t)
    for stage in study.stages:
        todo = [r for r in study.of(stage) if r.todo == "submit"]
        if not todo:
            continue
        console.print(f"[bold]{stage.experiment}[/]: {len(todo)} run(s) to submit", highlight=False)
        if study.launcher == "slurm":
            for r in todo:  # ids are known at submission: name the runs instead
                ids = [
                    u.job_id if u.todo == "queued" and u.job_id else f"<job of {u.label}>"
                    for u in r.upstream
                    if u.todo != "done"
                ]
                r.planned.params = with_dependency(r.planned.params, ids)
        sub = type(stage)(
            stage.experiment, stage.file, stage.launcher, stage.runs_dir, [r.planned for r in todo]
        )
        _print_plan(sub, console)


def _submit_study(
    file: Path,
    launcher: str | None,
    set_: list[str],
    only: list[str],
    dry_run: bool,
    follow: bool,
    force: bool,
) -> None:
    from tsrx.cli.console import console
    from tsrx.launch import status as st
    from tsrx.launch.study import plan_study, study_rows, study_table, submit_study

    study = plan_study(file, launcher, set_, only or None, force=force)
    if dry_run:
        _print_study_plan(study, console)
        return

    def announce(r: StudyRun, what: str) -> None:
        words = {
            "done": "done already, not redone",
            "adopted": f"running as job {r.job_id}, started by an earlier `tsrx submit` that "
            "is gone; waiting for it to end before the runs that need it (Ctrl-C stops "
            f"waiting and leaves it running; `tsrx cancel {r.run_dir}` stops it)",
            "queued": f"already queued ({r.job_id})",
            "blocked": "not started: "
            + ", ".join(f"{u.label} {u.state}" for u in r.upstream if u.state != "completed"),
            "submitted": f"submitted {r.job_id}"
            + (
                f" (after {', '.join(u.label for u in r.upstream if u.todo != 'done')})"
                if any(u.todo != "done" for u in r.upstream)
                else ""
            ),
        }
        console.print(f"{r.label}: {words.get(what, what)}", highlight=False)

    with _stops_its_jobs(console, file) if study.launcher == "local" else nullcontext():
        runs = submit_study(
            study,
            force=force,
            command=["tsrx", *sys.argv[1:]],
            wait_local=_wait_local(console),
            on_event=announce,
        )
    top = [r.run_dir for r in study.of(study.stages[-1])]
    if study.launcher == "slurm":
        n = sum(r.todo == "submit" for r in runs)
        console.print(
            f"{n} job(s) submitted; `tsrx status {file}` shows the study.", highlight=False
        )
        if follow:
            st.follow([r.run_dir for r in runs], console)
        return
    console.print(study_table(study_rows(top), width=console.width))
    if any(r.state != "completed" for r in study.of(study.stages[-1])):
        raise typer.Exit(1)
    from tsrx.cli.report_cmd import report

    report(
        Path(file),
        rows=None,
        selector=[],
        format_="rich",
        eval_missing=False,
        device="cpu",
        batch_size=None,
        runs_dir=None,
        output=None,
    )
    _identical_check_line(Path(file), console)


def _identical_check_line(file: Path, console: Console) -> None:
    """The report warns about identical metrics; say so too when the check found none."""
    from tsrx.report.collect import collect
    from tsrx.report.tables import build_report

    coll = collect(file, None)
    rep = build_report(coll, rows=None, selectors=None)
    if not any(w.startswith("identical") for w in rep.warnings):
        console.print(
            f"identical-metrics check: no two of the {len(coll.runs)} runs that differ "
            "in config have identical metrics",
            highlight=False,
        )


def status(
    target: str = typer.Argument(
        None,
        help="Experiment TOML, runs folder, experiment folder or run directory (default: runs).",
    ),
    json_: bool = typer.Option(False, "--json", help="Machine-readable rows."),
    follow: bool = typer.Option(False, "--follow", help="Refresh until every run has ended."),
) -> None:
    """One row per run: state, step/total, latest validation metrics, elapsed, job id.

    An experiment with `needs` shows its whole study, stage by stage, and what each
    waiting run waits on.
    """
    from tsrx.cli.console import console
    from tsrx.launch import status as st

    dirs = st.find_run_dirs(target)
    if target and target.endswith(".toml") and Path(target).is_file():
        from tsrx.launch.study import has_needs, study_json, study_rows, study_table

        if has_needs(target) and not follow:
            study = study_rows(dirs)
            if json_:
                typer.echo(json.dumps(study_json(study), indent=2))
            elif not study:
                console.print(f"no runs of {target} submitted yet", highlight=False)
            else:
                console.print(study_table(study, width=console.width))
            return
    if follow:
        st.follow(dirs, console)
        return
    rows = st.collect(dirs)
    if json_:
        typer.echo(st.as_json(rows))
    elif not rows:
        console.print(f"no runs under {target or 'runs'}", highlight=False)
    else:
        console.print(st.table(rows, width=console.width))
        for r in rows:
            if r.state == "damaged":
                console.print(f"{r.run}: {r.error}", highlight=False, markup=False)


def logs(
    run: Path = typer.Argument(..., help="Run directory."),
    rank: int = typer.Option(0, "--rank", help="Which rank's log."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
) -> None:
    """Print a run's per-rank log (stdout and stderr of the job)."""
    from tsrx.launch.control import log_path
    from tsrx.launch.status import TERMINAL, collect

    path = log_path(run, rank)
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            chunk = f.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            if not follow or collect([run])[0].state in TERMINAL:
                if follow:
                    sys.stdout.write(f.read())
                break
            time.sleep(1.0)


def cancel(
    target: str = typer.Argument(..., help="Experiment TOML, experiment folder or run directory."),
) -> None:
    """Cancel the latest job of each run (scancel, or stop the local job)."""
    from tsrx.cli.console import console
    from tsrx.launch.control import cancel as do_cancel
    from tsrx.launch.status import find_run_dirs

    done = do_cancel(find_run_dirs(target))
    if not done:
        console.print("no submitted runs to cancel", highlight=False)
    for d, jid, outcome in done:
        console.print(f"{jid}  {d.name}: {outcome}", highlight=False)


def register(app: typer.Typer) -> None:
    for name, command in (
        ("submit", submit),
        ("status", status),
        ("logs", logs),
        ("cancel", cancel),
    ):
        app.command(name)(command)
