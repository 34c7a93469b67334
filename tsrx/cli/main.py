"""The ``tsrx`` command: a typer app assembled from one small module per command group.

Command modules must not import torch at module level (``tsrx --help`` and
``tsrx status`` stay fast); heavy imports go inside the command functions.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from tsrx import __version__
from tsrx.errors import TsrxError

app = typer.Typer(
    name="tsrx",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Experiments for scene text image super-resolution: train, evaluate, "
    "submit to Slurm, report.",
)

# (name, module): a module's `app` (a typer.Typer) becomes `tsrx NAME ...`.
GROUPS = [
    ("config", "tsrx.cli.config_cmd"),
    ("plugins", "tsrx.cli.plugins_cmd"),
    ("data", "tsrx.cli.data_cmd"),
    ("ckpt", "tsrx.cli.ckpt_cmd"),
    ("viz", "tsrx.cli.viz_cmd"),
]
# (module): a module's `register(app)` adds top-level commands (`tsrx train`, `tsrx eval`...).
COMMANDS = [
    "tsrx.cli.train_cmd",
    "tsrx.cli.eval_cmd",
    "tsrx.cli.submit_cmd",
    "tsrx.cli.report_cmd",
    "tsrx.cli.sr_cmd",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tsrx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    if debug:
        os.environ["TSRX_DEBUG"] = "1"


def _assemble() -> None:
    for name, module in GROUPS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # that command group is not part of this build
            raise
        app.add_typer(mod.app, name=name)
    for module in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(app)


_assemble()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one paragraph on stderr and exit code 2."""
    debug = (
        "--debug" in (argv if argv is not None else sys.argv[1:])
        or os.environ.get("TSRX_DEBUG") == "1"
    )
    from tsrx.plugins import called_from_cli

    try:
        with called_from_cli():  # errors say --plugin, not load_model's plugins=
            rc = app(args=argv, standalone_mode=False, prog_name="tsrx")
        if isinstance(rc, int) and rc:  # typer.Exit(code) returns its code without standalone mode
            sys.exit(rc)
    except TsrxError as exc:
        if debug:
            raise
        from rich.markup import escape

        from tsrx.cli.console import err_console

        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # usage errors (unknown option, missing argument) come from typer's bundled click
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
