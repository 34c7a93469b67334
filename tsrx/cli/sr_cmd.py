"""``tsrx sr``: super-resolve your own text crops with a checkpoint.

Any crop is resized to the model's LR size exactly as the TextZoom protocol prepares its
LR images (Pillow bicubic, aspect ratio not kept, the mask channel when the model takes
one), so the model sees what it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import torch

from tsrx.cli.options import (
    DEVICE_DEFAULT,
    DEVICE_HELP,
    JUDGE_HELP,
    PLUGIN_HELP,
    PRECISION_HELP,
    RECOGNIZER_MOVED,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def _inputs(items: list[Path]) -> list[Path]:
    from tsrx.errors import TsrxError

    out: list[Path] = []
    for p in items:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise TsrxError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise TsrxError(f"{p}: no such image or folder")
    return out


def super_resolve(
    ckpt: Path,
    images: list[Path],
    out_dir: Path,
    *,
    recognize: bool = False,
    device: str | None = None,
    batch_size: int = 64,
    judges: list[str] | tuple[str, ...] = (),
    precision: str | None = None,
) -> list[dict[str, Any]]:
    """Write ``<out_dir>/<name>.png`` for each image; returns one dict per image (paths, readings)."""
    import torch
    from PIL import Image

    from tsrx.data.config import data_section
    from tsrx.engine.precision import check_precision
    from tsrx.errors import TsrxError
    from tsrx.viz.inference import bicubic_up, load, sr_of, to_uint8

    loaded = load(ckpt, device, judges)
    if precision is None:  # the config's, as tsrx eval reads it
        from tsrx.engine.config import eval_section

        precision = eval_section(loaded.config).precision
    check_precision(precision, loaded.device, "--precision")
    data = data_section(loaded.config)
    lr_size = [int(x) for x in data.lr_size]
    sr_part = getattr(loaded.model, "sr", None)
    mask = int(getattr(sr_part, "in_channels", 4 if data.mask else 3)) == 4
    if recognize and not loaded.has_reader:
        raise TsrxError(
            f"--recognize: {ckpt} has no recognizer and its config names no judge weights; "
            "pass --judge crnn=crnn.pth"
        )
    files = _inputs(images)
    out_dir.mkdir(parents=True, exist_ok=True)
    names: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        lr = torch.cat([_prepared(f, lr_size, mask) for f in chunk]).to(loaded.device)
        sr = sr_of(loaded.model, lr, precision)
        before = after = None
        if recognize:
            with torch.no_grad():
                before = loaded.read(bicubic_up(lr, (sr.shape[-2], sr.shape[-1])))
                after = loaded.read(sr)
        for j, (f, pic) in enumerate(zip(chunk, to_uint8(sr))):
            stem = f.stem
            names[stem] = names.get(stem, 0) + 1
            if names[stem] > 1:  # same name from two folders: keep both
                stem = f"{stem}~{names[stem]}"
            dest = out_dir / f"{stem}.png"
            Image.fromarray(pic).save(dest, format="PNG")
            rows.append(
                {
                    "input": str(f),
                    "output": str(dest),
                    "before": before[j] if before else None,
                    "after": after[j] if after else None,
                }
            )
    return rows


def _prepared(file: Path, lr_size: list[int], mask: bool) -> torch.Tensor:
    """One crop as the model reads it; a file that is no image is named in the error."""
    from tsrx.data.transforms import decode_image, prepare_lr
    from tsrx.errors import TsrxError

    try:
        img = decode_image(file.read_bytes())
    except ValueError as exc:
        raise TsrxError(f"{file}: {exc}") from None
    return prepare_lr([img], lr_size, mask)


def sr(
    inputs: list[Path] = typer.Argument(..., help="Images and/or folders of images (any size)."),
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="Checkpoint with an SR part (tsrx, or an official TextZoom file)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the SR PNGs."),
    recognize: bool = typer.Option(
        False,
        "--recognize",
        help="Print the reading of the bicubic-upscaled input and of the SR image.",
    ),
    judge: list[str] = typer.Option(
        [], "--judge", help="The reader when the model has no recognizer: " + JUDGE_HELP
    ),
    recognizer: str = typer.Option(None, "--recognizer", hidden=True),
    device: str = typer.Option(DEVICE_DEFAULT, "--device", help=DEVICE_HELP),
    precision: str = typer.Option(None, "--precision", help=PRECISION_HELP),
    plugin: list[str] = typer.Option(
        [],
        "--plugin",
        help=PLUGIN_HELP,
    ),
) -> None:
    """Super-resolve text crops: each is resized to the model's LR size (bicubic), then SR'd."""
    from tsrx.cli.console import console, err_console
    from tsrx.errors import TsrxError
    from tsrx.plugins import load_named_plugins

    if recognizer is not None:
        raise TsrxError(RECOGNIZER_MOVED.format(option="--recognizer", value=recognizer))
    load_named_plugins(plugin, ".", where="--plugin")
    from tsrx.engine.threads import configure_threads

    configure_threads()  # this process's share of the cores, as a run's (issue 14)
    rows = super_resolve(
        ckpt,
        inputs,
        output,
        recognize=recognize,
        device=device,
        judges=judge,
        precision=precision,
    )
    if recognize:
        from rich.markup import escape
        from rich.table import Table

        t = Table(title="readings: bicubic-upscaled input -> SR", title_justify="left")
        for col in ("image", "before", "after"):
            t.add_column(col)
        for r in rows:
            t.add_row(*(escape(str(v)) for v in (Path(r["input"]).name, r["before"], r["after"])))
        console.print(t)
    err_console.print(f"wrote {len(rows)} image(s) to {output}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sr")(sr)
