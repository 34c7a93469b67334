"""Contact sheets (Pillow): per split, rows of LR (bicubic-upscaled) | SR | HR with readings.

Each image is shown at ``scale`` times the HR size; under it the recognizer's reading,
green when it matches the label (TextZoom's lower-case alphanumeric comparison), red
otherwise. A row whose SR reading is right where the LR one was wrong is marked
"SR fixed" (green frame), the reverse "SR broke" (red frame). No torch here: samples
arrive as uint8 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLUMNS = ("lr", "sr", "hr")
HEADINGS = {"lr": "LR (bicubic)", "sr": "SR", "hr": "HR"}
GREEN, RED, GRAY, BLACK, WHITE = (
    (20, 140, 40),
    (200, 30, 30),
    (120, 120, 120),
    (0, 0, 0),
    (255, 255, 255),
)
MARGIN, GAP, LABEL_W, LINE_H, HEADER_H = 8, 8, 190, 14, 22


@dataclass
class Sample:
    """One test image: the three pictures (H, W, 3 uint8, same size), its label and readings."""

    index: int
    label: str
    images: dict[str, np.ndarray]
    reads: dict[str, str | None] = field(default_factory=dict)
    correct: dict[str, bool] = field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        if "lr" not in self.correct or "sr" not in self.correct:
            return None
        if self.correct["sr"] and not self.correct["lr"]:
            return "fixed"
        if self.correct["lr"] and not self.correct["sr"]:
            return "broke"
        return None


def _tile_size(hr_size: tuple[int, int], scale: int) -> tuple[int, int]:
    return hr_size[1] * scale, hr_size[0] * scale  # (width, height)


def sheet_size(
    counts: list[int], hr_size: tuple[int, int] = (32, 128), scale: int = 2
) -> tuple[int, int]:
    """(width, height) in pixels of a sheet with these per-split sample counts."""
    tw, th = _tile_size(hr_size, scale)
    width = 2 * MARGIN + LABEL_W + len(COLUMNS) * (tw + GAP)
    row_h = th + LINE_H + GAP
    height = MARGIN + sum(2 * HEADER_H + n * row_h for n in counts) + MARGIN
    return width, height


def contact_sheet(
    sections: list[tuple[str, list[Sample]]], hr_size: tuple[int, int] = (32, 128), scale: int = 2
) -> Image.Image:
    """The sheet: a header per split (with fixed/broke counts), then one row per sample."""
    width, height = sheet_size([len(s) for _, s in sections], hr_size, scale)
    tw, th = _tile_size(hr_size, scale)
    sheet = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    y = MARGIN
    for split, samples in sections:
        fixed = sum(s.verdict == "fixed" for s in samples)
        broke = sum(s.verdict == "broke" for s in samples)
        draw.text(
            (MARGIN, y + 4),
            f"{split}: {len(samples)} samples, SR fixed {fixed}, SR broke {broke}",
            fill=BLACK,
            font=font,
        )
        y += HEADER_H
        for c, col in enumerate(COLUMNS):
            draw.text(
                (MARGIN + LABEL_W + c * (tw + GAP), y + 4), HEADINGS[col], fill=GRAY, font=font
            )
        y += HEADER_H
        for s in samples:
            draw.text((MARGIN, y + 2), f"#{s.index}", fill=GRAY, font=font)
            draw.text((MARGIN, y + 2 + LINE_H), f"label: {s.label}"[:30], fill=BLACK, font=font)
            if s.verdict:
                draw.text(
                    (MARGIN, y + 2 + 2 * LINE_H),
                    f"SR {s.verdict}",
                    fill=GREEN if s.verdict == "fixed" else RED,
                    font=font,
                )
            for c, col in enumerate(COLUMNS):
                x = MARGIN + LABEL_W + c * (tw + GAP)
                img = Image.fromarray(_rgb(s.images[col])).resize(
                    (tw, th), Image.Resampling.NEAREST
                )
                sheet.paste(img, (x, y))
                if col == "sr" and s.verdict:
                    draw.rectangle(
                        (x - 2, y - 2, x + tw + 1, y + th + 1),
                        outline=GREEN if s.verdict == "fixed" else RED,
                        width=2,
                    )
                read = s.reads.get(col)
                if read is not None:
                    ok = s.correct.get(col)
                    draw.text(
                        (x, y + th + 1),
                        f"read: {read[:40] or '(nothing)'}",
                        font=font,
                        fill=GRAY if ok is None else (GREEN if ok else RED),
                    )
            y += th + LINE_H + GAP
    return sheet


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return a[..., :3]


def save_png(image: Image.Image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
