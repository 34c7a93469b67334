"""``tsrx submit``, ``tsrx status``, ``tsrx logs``, ``tsrx cancel``: runs on Slurm or locally."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer

SET_HELP = "Override a key, typed by the schema: --set train.steps=100 (repeatable)."


def _differences(runs) -> tuple[list[str], list[list[str]]]:
    """Keys whose resolved values differ between runs, and each run's values for them."""
    from tsrx.launch.rundir import config_differences
    keys: list[str] = []
    for r in runs[1:]:
        for k, _, _ in config_differences(runs[0].spec.config, r.spec.config):
            if k not in keys:
                keys.append(k)
    from tsrx.config.load import get_dotted
    missing = object()
    rows = [["-" if (v := get_dotted(r.spec.config, k, missing)) is missing else json.dumps(v, default=list)
             for k in keys] for r in runs]
    return keys, rows


def _print_plan(plan, console) -> None:
    from rich.table import Table

    from tsrx.launch.submit import sbatch_script
    how = ("one job array" if plan.as_array else f"{len(plan.runs)} job(s)") + f" via {plan.launcher}"
    console.print(f"[bold]{plan.experiment}[/]: {len(plan.runs)} run(s) from {plan.file}, {how}",
                  highlight=False)
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


def _wait_local(console):
    def wait(sub) -> None:
        from tsrx.launch.status import collect, table
        from rich.live import Live
        job = sub.job
        try:
            with Live(table(collect([sub.run.run_dir])), console=console, refresh_per_second=1) as live:
                while not job.done():
                    time.sleep(2.0)
                    live.update(table(collect([sub.run.run_dir])))
                live.update(table(collect([sub.run.run_dir])))
            console.print()
        except KeyboardInterrupt:
            job.cancel()
            raise
    return wait


def register(app: typer.Typer) -> None:
    @app.command("submit")
    def submit(
        file: Path = typer.Argument(..., help="Experiment TOML file."),
        launcher: str = typer.Option(None, "--launcher",
                                     help="slurm or local (default: the file's launcher.type)."),
        set_: list[str] = typer.Option([], "--set", help=SET_HELP),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the runs, their config "
                                     "differences and the sbatch script; submit nothing."),
        only: list[str] = typer.Option([], "--only", help="Only runs with this name or prefix "
                                       "(repeatable)."),
        follow: bool = typer.Option(False, "--follow", help="Show live progress until all runs end."),
        force: bool = typer.Option(False, "--force", help="Replace a run directory that holds a "
                                   "different config (old outputs move to superseded/)."),
        new: bool = typer.Option(False, "--new", help="Put runs whose directory holds a different "
                                 "config into a new directory (<run>~2)."),
    ) -> None:
        """Create one run directory per grid point and submit them (Slurm array, or locally).

        Slurm: prints the job ids and returns. Local: runs the jobs one after another here.
        Submitting a run again with the same config resumes it from last.pth.
        """
        from tsrx.cli.console import console
        from tsrx.launch import status as st
        from tsrx.launch.submit import plan as make_plan
        from tsrx.launch.submit import submit as do_submit
        plan = make_plan(file, launcher, set_, only or None, force=force, new=new)
        if dry_run:
            _print_plan(plan, console)
            return

        def announce(sub) -> None:
            console.print(f"submitted {sub.job_id}  {sub.run.spec.name}  -> {sub.run.run_dir}",
                          highlight=False)

        done = do_submit(plan, force=force, new=new, command=["tsrx", *sys.argv[1:]],
                         wait_local=_wait_local(console), on_submitted=announce)
        if plan.launcher == "slurm":
            console.print(f"{len(done)} job(s) submitted; `tsrx status {file}` shows progress.",
                          highlight=False)
            if follow:
                st.follow([s.run.run_dir for s in done], console)
        else:
            rows = st.collect([s.run.run_dir for s in done])
            if len(rows) > 1:
                console.print(st.table(rows, title="all runs"))
            bad = [r for r in rows if r.state != "completed"]
            if bad:
                raise typer.Exit(1)

    @app.command("status")
    def status(
        target: str = typer.Argument(None, help="Experiment TOML, runs folder, experiment folder "
                                     "or run directory (default: runs)."),
        json_: bool = typer.Option(False, "--json", help="Machine-readable rows."),
        follow: bool = typer.Option(False, "--follow", help="Refresh until every run has ended."),
    ) -> None:
        """One row per run: state, step/total, latest validation metrics, elapsed, job id."""
        from tsrx.cli.console import console
        from tsrx.launch import status as st
        dirs = st.find_run_dirs(target)
        if follow:
            st.follow(dirs, console)
            return
        rows = st.collect(dirs)
        if json_:
            typer.echo(st.as_json(rows))
        elif not rows:
            console.print(f"no runs under {target or 'runs'}", highlight=False)
        else:
            console.print(st.table(rows))
            for r in rows:
                if r.state == "damaged":
                    console.print(f"{r.run}: {r.error}", highlight=False, markup=False)

    @app.command("logs")
    def logs(
        run: Path = typer.Argument(..., help="Run directory."),
        rank: int = typer.Option(0, "--rank", help="Which rank's log."),
        follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    ) -> None:
        """Print a run's per-rank log (stdout and stderr of the job)."""
        from tsrx.launch.control import log_path
        from tsrx.launch.status import TERMINAL, collect
        path = log_path(run, rank)
        with open(path, "r", encoding="utf-8", errors="replace") as f:
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

    @app.command("cancel")
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
