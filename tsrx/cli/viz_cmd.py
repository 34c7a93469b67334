"""``tsrx viz samples|curves``: contact sheets of SR results and training curves as PNGs."""

from __future__ import annotations

from pathlib import Path

import typer

from tsrx.cli.options import DEVICE_DEFAULT, DEVICE_HELP, JUDGE_HELP, RECOGNIZER_MOVED

app = typer.Typer(help="Pictures: SR contact sheets and training curves.", no_args_is_help=True)


@app.command("samples")
def samples(
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="Checkpoint (a tsrx one's embedded config rebuilds the model)."
    ),
    data: Path = typer.Option(
        None,
        "--data",
        help="Data root holding the test splits (default: the checkpoint config's data.root).",
    ),
    n: int = typer.Option(24, "-n", help="Samples per split, spread evenly over it."),
    split: list[str] = typer.Option([], "--split", help="Only these test splits (repeatable)."),
    judge: list[str] = typer.Option(
        [],
        "--judge",
        help="The reader when the model has no recognizer (default: the config's [eval] "
        "judges): " + JUDGE_HELP,
    ),
    recognizer: str = typer.Option(None, "--recognizer", hidden=True),
    scale: int = typer.Option(2, "--scale", help="Magnification of each image on the sheet."),
    device: str = typer.Option(DEVICE_DEFAULT, "--device", help=DEVICE_HELP),
    output: Path = typer.Option(Path("samples.png"), "-o", "--output", help="PNG to write."),
) -> None:
    """Per split: LR (bicubic-upscaled) | SR | HR with label and readings; SR fixed/broke marked."""
    from tsrx.cli.console import err_console
    from tsrx.errors import TsrxError
    from tsrx.viz.samples import samples_sheet

    if recognizer is not None:
        raise TsrxError(RECOGNIZER_MOVED.format(option="--recognizer", value=recognizer))
    if n < 1 or scale < 1:
        raise TsrxError(f"-n and --scale must be >= 1, got -n {n} --scale {scale}")
    from tsrx.engine.threads import configure_threads

    configure_threads()  # this process's share of the cores, as a run's (issue 14)
    path, sections = samples_sheet(
        ckpt,
        data,
        output,
        n=n,
        splits=split or None,
        device=device,
        scale=scale,
        judges=judge,
    )
    for name, items in sections.items():
        fixed = sum(s.verdict == "fixed" for s in items)
        broke = sum(s.verdict == "broke" for s in items)
        no_reader = bool(items) and items[0].reads.get("sr") is None
        reads = (
            "no readings (no recognizer in the model and no judge weights)"
            if no_reader
            else f"SR fixed {fixed}, SR broke {broke}"
        )
        err_console.print(f"{name}: {len(items)} samples, {reads}", highlight=False)
    err_console.print(f"wrote {path}", highlight=False)


@app.command("curves")
def curves(
    runs: list[Path] = typer.Argument(..., help="Run directories (one or several)."),
    output: Path = typer.Option(Path("curves.png"), "-o", "--output", help="PNG to write."),
) -> None:
    """Training loss terms, uncertainty sigma per task, validation ACC/PSNR/SSIM per split over steps."""
    from tsrx.cli.console import err_console
    from tsrx.errors import TsrxError
    from tsrx.report.collect import is_run_dir, read_run
    from tsrx.viz.curves import plot_curves

    bad = [str(r) for r in runs if not is_run_dir(r)]
    if bad:
        raise TsrxError(
            f"not a run directory (no config.toml, status.json or metrics.jsonl): {bad[0]}"
        )
    path = plot_curves([read_run(r) for r in runs], output)
    err_console.print(f"wrote {path}", highlight=False)
