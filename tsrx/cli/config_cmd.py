"""``tsrx config show|validate``: the resolved runs of an experiment file."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Resolve and validate experiment files.", no_args_is_help=True)

SET_HELP = "Override a key, typed by the schema: --set train.steps=100 (repeatable)."


@app.command("show")
def show(
    file: Path = typer.Argument(..., help="Experiment TOML file."),
    run: str = typer.Option(None, "--run", help="Only the run with this name (or name prefix)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Print the fully resolved TOML of each run."""
    from tsrx.config.experiment import load_experiment
    from tsrx.config.toml_write import dumps

    exp = load_experiment(file, set_, only=[run] if run else None)
    for i, r in enumerate(exp.runs):
        if len(exp.runs) > 1 or run:
            typer.echo(f"{'' if i == 0 else chr(10)}# run: {r.name}")
        typer.echo(dumps(r.config), nl=False)


@app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="Experiment TOML file(s)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Validate every grid point without building models; all errors at once.

    Refuses what ``tsrx train`` refuses (a file meant only for ``eval --config`` fails here
    when it has no [data.train]: ``config show`` resolves it)."""
    from tsrx.config.experiment import load_experiment
    from tsrx.errors import ConfigError, TsrxError

    failed: list[str] = []
    for file in files:
        try:
            exp = load_experiment(file, set_, for_training=True)
        except TsrxError as exc:
            failed.append(str(exc) if isinstance(exc, ConfigError) else f"{exc}")
            continue
        typer.echo(f"{file}: ok, {len(exp.runs)} run(s): " + ", ".join(r.name for r in exp.runs))
    if failed:
        raise TsrxError("\n".join(failed))
