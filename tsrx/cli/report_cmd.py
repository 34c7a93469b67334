"""``tsrx report`` (grid tables from recorded results) and ``tsrx diff`` (what differs between runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tsrx.cli.options import DEVICE_DEFAULT, DEVICE_HELP

FORMAT_HELP = (
    "rich (terminal), md (paste-ready Markdown), csv, json, or the papers' layout "
    "(rows = methods incl. bicubic and HR, columns = judges x E/M/H/Avg): paper-md "
    "or latex; or a report format a plugin registers (tsrx plugins list report_format)."
)


def report(
    target: Path = typer.Argument(..., help="Experiment TOML, or a runs folder / run directory."),
    rows: str | None = typer.Option(
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
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        help="Eval batch size for --eval-missing (default: the run's [eval] batch_size).",
    ),
    runs_dir: Path | None = typer.Option(
        None,
        "--runs-dir",
        help="Where an experiment's runs live (default: its [launcher] runs_dir).",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write the report to this file."
    ),
) -> None:
    """Tables E/M/H/A of ACC, PSNR and SSIM per checkpoint selector, from recorded results."""
    from tsrx.cli.console import console, err_console
    from tsrx.report.collect import collect
    from tsrx.report.formats import get_format
    from tsrx.report.tables import build_report, selectors_of

    fmt = get_format(format_)
    coll = collect(target, runs_dir)
    if eval_missing:
        from tsrx.engine.threads import configure_threads
        from tsrx.report.evaluate import evaluate_missing, missing

        configure_threads()  # this process's share of the cores, as a run's (issue 14)
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
    elif callable(show := getattr(fmt, "show", None)):
        show(rep, console)
        on_stderr = True
    else:
        typer.echo(fmt.render(rep), nl=False)
        on_stderr = not fmt.warnings_in_text
    if on_stderr:
        for w in rep.warnings:
            err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)


def diff(
    a: str = typer.Argument(
        ...,
        help="Run directory, config.toml, checkpoint, result JSON (with its .records.npz), "
        "records file, or bicubic / hr (the other side's baseline rows).",
    ),
    b: str = typer.Argument(..., help="The same kinds as A."),
    selector: str = typer.Option(
        None, "--selector", help="Which checkpoint of a run directory (default: its first)."
    ),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed (the interval is reproducible)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Resolved-config differences between two runs, then their paired comparison on the same
    images from per-image records: A - B in accuracy with a 95% bootstrap interval, the exact
    McNemar p-value and the discordant counts, per judge and split."""
    import json

    from rich.markup import escape

    from tsrx.cli.console import console
    from tsrx.errors import TsrxError
    from tsrx.report.diff import config_of, differences, short
    from tsrx.report.paired import BASELINE_SIDES, paired_table, resolve_side

    configs: list[tuple[dict[str, Any], str] | None] = []
    for side in (a, b):
        if side in BASELINE_SIDES or Path(side).suffix in (".json", ".npz"):
            configs.append(None)
            continue
        configs.append(config_of(Path(side)))
    first, second = configs
    diffs: list[tuple[str, Any, Any]] | None = None
    wa = wb = ""  # where each side's config came from
    if first and second:
        diffs = differences(first[0], second[0])
        wa, wb = first[1], second[1]
    sides = [resolve_side(side, selector) for side in (a, b)]
    try:
        paired = paired_table(*sides, seed=seed)
        why = None
    except TsrxError as exc:
        if diffs is None:
            raise
        paired, why = [], str(exc)
    if as_json:
        body = {"a": sides[0].what, "b": sides[1].what, "paired": paired}
        if diffs is not None:
            body.update(
                a=wa,
                b=wb,
                differences=[{"key": k, "a": va, "b": vb} for k, va, vb in diffs],
            )
        if why:
            body["paired_unavailable"] = why
        typer.echo(json.dumps(body, indent=2, default=str))
        return
    from rich.table import Table

    if diffs is not None:
        if not diffs:
            typer.echo(f"no differences in the resolved config:\n  A = {wa}\n  B = {wb}")
        else:
            typer.echo(f"{len(diffs)} difference(s) in the resolved config\nA = {wa}\nB = {wb}")
            t = Table()
            t.add_column("key", no_wrap=True)
            t.add_column("A")
            t.add_column("B")
            for k, va, vb in diffs:
                t.add_row(escape(k), escape(short(va)), escape(short(vb)))
            console.print(t)
    if why:
        typer.echo(f"no paired comparison: {why}")
        return
    typer.echo(f"paired comparison on the same images\nA = {sides[0].what}\nB = {sides[1].what}")
    several = len({r["judge"] for r in paired}) > 1
    if not several:
        typer.echo(f"judge: {paired[0]['judge']}")
    head = ["judge"] if several else []
    lines = [head + ["split", "ACC A", "ACC B", "A-B", "95% CI", "p", "A/B only", "n"]]
    for r in paired:
        low, high = r["ci"]
        p = r["p"]
        lines.append(
            ([r["judge"]] if several else [])
            + [
                r["split"],
                f"{r['acc_a']:.4f}",
                f"{r['acc_b']:.4f}",
                f"{r['diff']:+.4f}",
                f"[{low:+.4f}, {high:+.4f}]",
                f"{p:.2g}" if p < 0.001 else f"{p:.3f}",
                f"{r['discordant']['a_only']:g} / {r['discordant']['b_only']:g}",
                str(r["n_images"]),
            ]
        )
    widths = [max(len(line[k]) for line in lines) for k in range(len(lines[0]))]
    left = len(head) + 1  # judge and split read left to right, numbers right-aligned
    for line in lines:  # plain text: a pipe or a narrow terminal never cuts a number
        typer.echo(
            "  ".join(
                v.ljust(w) if k < left else v.rjust(w) for k, (v, w) in enumerate(zip(line, widths))
            )
        )
    typer.echo(
        "A-B: accuracy difference, 95% CI: 10,000 paired bootstrap resamples of the images "
        f"within each split (seed {seed}); p: exact McNemar (two-sided binomial test on the "
        "discordant images); A/B only: images read right by one side only"
    )


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("diff")(diff)
