"""``tsrx data synth | inspect | check``: make, look at and verify TextZoom-format data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from tsrx.data.inspect import SplitSummary

app = typer.Typer(
    help="Synthesise, inspect and check TextZoom-format LMDB data.", no_args_is_help=True
)


@app.command("synth")
def synth_cmd(
    out: Path = typer.Argument(
        ..., help="Folder to create (train1, train2, test/easy, test/medium, test/hard)."
    ),
    train: int = typer.Option(2000, "--train", help="Training samples in train1."),
    train2: int = typer.Option(
        None,
        "--train2",
        help="Training samples in train2 (default: TextZoom's ratio, 2794/14573 of --train).",
    ),
    test: tuple[int, int, int] = typer.Option(
        (300, 300, 300), "--test", help="Test samples: easy medium hard."
    ),
    val: tuple[int, int, int] = typer.Option(
        (0, 0, 0),
        "--val",
        help="Validation samples (val/easy...): easy medium hard; none by default. "
        "Other random streams than test: select checkpoints on it, report test.",
    ),
    seed: int = typer.Option(0, "--seed", help="Same seed (and fonts): same data."),
    fonts: str = typer.Option(
        "all",
        "--fonts",
        help="'all': built-in font plus system fonts found; 'builtin': "
        "Pillow's embedded font only (identical on every machine).",
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        min=1,
        help="Processes making samples (default: one per CPU, at most 8); "
        "the data is the same for any number.",
    ),
) -> None:
    """Write synthetic LR/HR text pairs in TextZoom's exact LMDB format."""
    from tsrx.cli.console import console
    from tsrx.data.synth import synthesize

    start = time.perf_counter()
    manifest = synthesize(
        out,
        train=train,
        test=list(test),
        seed=seed,
        fonts=fonts,
        train2=train2,
        val=list(val),
        workers=workers,
    )
    took = time.perf_counter() - start
    console.print(
        f"wrote {out}: train1 {train}, train2 {manifest.train2}, test/easy {test[0]}, "
        f"test/medium {test[1]}, "
        f"test/hard {test[2]}"
        + (f", val {'/'.join(map(str, val))}" if any(val) else "")
        + f" (seed {seed}, {len(manifest.fonts)} font(s), "
        f"{took:.1f} s)",
        highlight=False,
    )


@app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(
        ..., help="A TextZoom root (train1, test/easy...) or one LMDB folder."
    ),
    sheet: Path = typer.Option(
        None, "-o", "--sheet", help="Write a contact sheet PNG (LR | HR, label)."
    ),
    per_split: int = typer.Option(9, "--per-split", help="Samples per split on the contact sheet."),
    bicubic: bool = typer.Option(
        False, "--bicubic", help="Also bicubic LR->HR PSNR/SSIM per split (reads every image)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Splits, counts, label lengths, character coverage, native image sizes."""
    from dataclasses import asdict

    from tsrx.data.inspect import contact_sheet, find_lmdbs, summarize

    splits = find_lmdbs(path)
    summaries = [summarize(name, folder) for name, folder in splits]
    baselines: dict[str, dict[str, float]] = {}
    if bicubic:
        from tsrx.data.textzoom import open_lmdb_dataset
        from tsrx.engine.data_stats import bicubic_baseline

        for name, folder in splits:
            baselines[name] = bicubic_baseline(open_lmdb_dataset(folder, mask=False, skip_bad=True))
    written = contact_sheet(splits, per_split, sheet) if sheet else None
    if as_json:
        out = {
            "path": str(path),
            "splits": [
                dict(
                    asdict(s),
                    coverage=s.coverage(),
                    outside_vocabulary=s.outside(),
                    bicubic=baselines.get(s.name),
                )
                for s in summaries
            ],
            "sheet": str(written) if written else None,
        }
        typer.echo(json.dumps(out, indent=2))
        return
    _print_summaries(summaries, baselines, written)


def _print_summaries(
    summaries: list[SplitSummary], baselines: dict[str, dict[str, float]], sheet: Path | None
) -> None:
    from rich.table import Table

    from tsrx.cli.console import console

    table = Table(title="TextZoom-format data")
    for col in ("split", "samples", "label len", "HR WxH", "LR WxH", "chars all/lower", "outside"):
        table.add_column(col, overflow="fold")
    if baselines:
        table.add_column("bicubic PSNR/SSIM", overflow="fold")
    for s in summaries:
        lens = s.label_lengths
        total = sum(lens.values())
        mean = sum(k * v for k, v in lens.items()) / total if total else 0.0
        cov = s.coverage()
        row = [
            s.name,
            str(s.num_samples) + (f" ({s.unreadable} unreadable)" if s.unreadable else ""),
            f"{min(lens, default=0)}-{max(lens, default=0)} ~{mean:.1f}",
            f"{s.hr_w[0]}-{s.hr_w[1]}x{s.hr_h[0]}-{s.hr_h[1]}",
            f"{s.lr_w[0]}-{s.lr_w[1]}x{s.lr_h[0]}-{s.lr_h[1]}",
            f"{cov['all']:.0%} / {cov['lower']:.0%}",
            " ".join(s.outside()) or "-",
        ]
        if baselines:
            b = baselines[s.name]
            row.append(f"{b['psnr']:.2f}/{b['ssim']:.4f}")
        table.add_row(*row)
    console.print(table)
    for s in summaries:
        hist = "  ".join(f"{k}:{v}" for k, v in s.label_lengths.items())
        console.print(f"{s.name} label lengths  {hist}", highlight=False)
    if baselines:
        console.print(
            "bicubic: LR 16x64 -> 32x128 (torch bicubic, align_corners=False), "
            "textzoom protocol, batch 50 (as tsrx eval's bicubic baseline)",
            highlight=False,
        )
    if sheet:
        console.print(f"contact sheet: {sheet}", highlight=False)


@app.command("check")
def check_cmd(
    path: Path = typer.Argument(..., help="A TextZoom root or one LMDB folder."),
    voc_type: str = typer.Option(
        "all", "--voc-type", help="Vocabulary the labels must fit: digit, lower, upper, all."
    ),
    max_len: int = typer.Option(100, "--max-len", help="Longest acceptable label."),
    show: int = typer.Option(20, "--show", help="Problems listed per split (all are counted)."),
) -> None:
    """Read and decode every entry; list problems; exit 1 if there are any."""
    from tsrx.cli.console import console
    from tsrx.data.inspect import check_split, find_lmdbs
    from tsrx.errors import TsrxError
    from tsrx.models.text import VOCABULARIES

    if voc_type not in VOCABULARIES:
        raise TsrxError(f"--voc-type {voc_type!r} is not one of {', '.join(VOCABULARIES)}")
    total_bad = 0
    for name, folder in find_lmdbs(path, include_broken=True):
        n, bad = check_split(name, folder, voc_type, max_len)
        total_bad += len(bad)
        status = "[green]ok[/]" if not bad else f"[red]{len(bad)} bad[/]"
        console.print(f"{name}: {n} entries, {status}  ({folder})", highlight=False)
        for b in bad[:show]:
            console.print(f"  {b}", highlight=False, markup=False)
        if len(bad) > show:
            console.print(f"  ... and {len(bad) - show} more", highlight=False)
    if total_bad:
        console.print(f"[red]{total_bad} bad sample(s)[/]; train with skip_bad = true to skip them")
        # SystemExit, not typer.Exit: main() runs click with standalone_mode=False, which
        # turns typer.Exit into a return value that main() does not pass on
        raise SystemExit(1)
