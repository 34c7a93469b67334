"""``tsrx report`` (grid tables from recorded results) and ``tsrx diff`` (what differs between runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from tsrx.cli.options import DEVICE_DEFAULT, DEVICE_HELP

FORMAT_HELP = (
    "rich (terminal), md (paste-ready Markdown), csv, json, or the papers' layout "
    "(rows = methods incl. bicubic and HR, columns = judges x E/M/H/Avg): paper-md "
    "or latex; or a report format a plugin registers (tsrx plugins list report_format)."
)


def report(
    target: Path = typer.Argument(..., help="Experiment TOML, or a runs folder / run directory."),
    rows: str = typer.Option(
        None,
        "--rows",
        help="Grid axis for the rows: its key "
        "(model.head.type) or short label (head); default the first axis.",
    ),
    selector: list[str] = typer.Option(
        [],
        "--selector",
        help="Only these checkpoints (best_acc or best_acc_model.pth; repeatable).",
    ),
    format_: str = typer.Option("rich", "--format", "-f", help=FORMAT_HELP),
    eval_missing: bool = typer.Option(
        False,
        "--eval-missing",
        help="Evaluate checkpoints that have no cached test result (cached for next time).",
    ),
    device: str = typer.Option(
        DEVICE_DEFAULT, "--device", help="Device for --eval-missing: " + DEVICE_HELP
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        help="Eval batch size for --eval-missing (default: the run's [eval] batch_size).",
    ),
    runs_dir: Path = typer.Option(
        None,
        "--runs-dir",
        help="Where an experiment's runs live (default: its [launcher] runs_dir).",
    ),
    output: Path = typer.Option(None, "-o", "--output", help="Write the report to this file."),
) -> None:
    """Tables E/M/H/A of ACC, PSNR and SSIM per checkpoint selector, from recorded results."""
    from tsrx.cli.console import console, err_console
    from tsrx.report.collect import collect
    from tsrx.report.formats import get_format
    from tsrx.report.tables import build_report, selectors_of

    fmt = get_format(format_)
    coll = collect(target, runs_dir)
    if eval_missing:
        from tsrx.report.evaluate import evaluate_missing, missing

        pending = missing(
            coll,
            selectors_of(coll.runs, selector or None),
            {"batch_size": batch_size} if batch_size else None,
        )
        if not pending:
            err_console.print("every checkpoint already has a cached test result")
        evaluate_missing(
            pending,
            device=device,
            batch_size=batch_size,
            progress=lambda m: err_console.print(m, highlight=False),
        )
        coll = collect(target, runs_dir)
    rep = build_report(coll, rows=rows, selectors=selector or None)
    for p in rep.problems:
        err_console.print(f"[yellow]problem:[/] {p}", highlight=False)
    if not rep.blocks:
        err_console.print(
            "no checkpoint selector recorded by any run yet "
            f"({len(coll.runs)} run(s): "
            + ", ".join(f"{r.name} [{r.state_note()}]" for r in coll.runs)
            + ")"
        )
    if output is not None:
        output.write_text(fmt.render(rep), encoding="utf-8")
        err_console.print(f"wrote {output}")
        on_stderr = True
    elif callable(getattr(fmt, "show", None)):
        fmt.show(rep, console)
        on_stderr = True
    else:
        typer.echo(fmt.render(rep), nl=False)
        on_stderr = not fmt.warnings_in_text
    if on_stderr:
        for w in rep.warnings:
            err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)


def diff(
    a: Path = typer.Argument(..., help="Run directory, config.toml or checkpoint."),
    b: Path = typer.Argument(..., help="Run directory, config.toml or checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Resolved-config differences between two runs (or checkpoints' embedded configs)."""
    import json

    from rich.markup import escape

    from tsrx.cli.console import console
    from tsrx.report.diff import config_of, differences, short

    ca, wa = config_of(a)
    cb, wb = config_of(b)
    diffs = differences(ca, cb)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "a": wa,
                    "b": wb,
                    "differences": [{"key": k, "a": va, "b": vb} for k, va, vb in diffs],
                },
                indent=2,
                default=str,
            )
        )
        return
    if not diffs:
        typer.echo(f"no differences in the resolved config:\n  A = {wa}\n  B = {wb}")
        return
    from rich.table import Table

    typer.echo(f"{len(diffs)} difference(s) in the resolved config\nA = {wa}\nB = {wb}")
    t = Table()
    t.add_column("key", no_wrap=True)
    t.add_column("A")
    t.add_column("B")
    for k, va, vb in diffs:
        t.add_row(escape(k), escape(short(va)), escape(short(vb)))
    console.print(t)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("diff")(diff)
