"""Looking at a TextZoom-format data set: find its LMDBs, summarise, check, draw samples.

The work behind ``tsrx data inspect`` and ``tsrx data check``; no torch needed.
"""

from __future__ import annotations

import collections
import io
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from tsrx.data.cache import DEFAULT_DIRNAME
from tsrx.data.lmdb_io import LazyLmdb, is_lmdb_dir, read_num_samples, split_problem
from tsrx.data.samples import BadSample, SampleProblem, check_label, decode_pair, read_raw
from tsrx.errors import TsrxError
from tsrx.models.text import VOCABULARIES

_ORDER = {"train1": 0, "train2": 1, "test/easy": 2, "test/medium": 3, "test/hard": 4}


def find_lmdbs(path: str | Path, include_broken: bool = False) -> list[tuple[str, Path]]:
    """(split name, folder) of every LMDB under ``path`` (or ``path`` itself), TextZoom order.

    ``include_broken``: also TextZoom's split names (train1, test/easy...) that exist under
    ``path`` but are not LMDBs (a plain file, a folder without data.mdb), so a check names
    them instead of passing over them."""
    p = Path(path)
    if not p.exists():
        raise TsrxError(f"{p}: no such file or folder")
    if is_lmdb_dir(p):
        return [(p.name, p)]
    found = []
    for mdb in p.rglob("data.mdb"):
        folder = mdb.parent
        rel = folder.relative_to(p)
        if DEFAULT_DIRNAME in rel.parts or any(part.startswith(".") for part in rel.parts):
            continue
        found.append((rel.as_posix(), folder))
    if include_broken:
        for name in _ORDER:
            cand = p / name
            if (cand.exists() or cand.is_symlink()) and not is_lmdb_dir(cand):
                found.append((name, cand))
    if not found:
        raise TsrxError(
            f"{p}: no LMDB found (expected a TextZoom root with train1, test/easy..., "
            "or one LMDB folder holding data.mdb)"
        )
    return sorted(found, key=lambda s: (_ORDER.get(s[0], 99), s[0]))


def _size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size  # the header only: cheap
    except Exception:
        return None


@dataclass
class SplitSummary:
    name: str
    path: str
    num_samples: int
    label_lengths: dict[int, int] = field(default_factory=dict)
    chars: dict[str, int] = field(default_factory=dict)
    hr_w: tuple[int, int] = (0, 0)
    hr_h: tuple[int, int] = (0, 0)
    lr_w: tuple[int, int] = (0, 0)
    lr_h: tuple[int, int] = (0, 0)
    unreadable: int = 0

    def coverage(self) -> dict[str, float]:
        """Share of each vocabulary's characters that occur in the labels."""
        seen = set(self.chars)
        return {v: len(seen & set(a)) / len(a) for v, a in VOCABULARIES.items()}

    def outside(self) -> list[str]:
        return sorted(set(self.chars) - set(VOCABULARIES["all"]))


def summarize(name: str, path: Path) -> SplitSummary:
    """Counts, label length histogram, character counts and native image size ranges."""
    db = LazyLmdb(path)
    n = read_num_samples(db)
    lengths: collections.Counter[int] = collections.Counter()
    chars: collections.Counter[str] = collections.Counter()
    sizes: dict[str, list[tuple[int, int]]] = {"hr": [], "lr": []}
    unreadable = 0
    for i in range(1, n + 1):
        try:
            label, hr, lr = read_raw(db, i)
        except SampleProblem:
            unreadable += 1
            continue
        lengths[len(label)] += 1
        chars.update(label)
        for key, data in (("hr", hr), ("lr", lr)):
            size = _size(data)
            if size:
                sizes[key].append(size)

    def span(vals: list[int]) -> tuple[int, int]:
        return (min(vals), max(vals)) if vals else (0, 0)

    return SplitSummary(
        name,
        str(path),
        n,
        dict(sorted(lengths.items())),
        dict(chars.most_common()),
        span([w for w, _ in sizes["hr"]]),
        span([h for _, h in sizes["hr"]]),
        span([w for w, _ in sizes["lr"]]),
        span([h for _, h in sizes["lr"]]),
        unreadable,
    )


def check_split(
    name: str, path: Path, voc_type: str = "all", max_len: int = 100
) -> tuple[int, list[BadSample]]:
    """Read and decode every entry; (entries read, problems). Never raises on bad data."""
    problem = split_problem(path)
    if problem:
        return 0, [BadSample(str(path), name, 0, problem)]
    try:
        db = LazyLmdb(path)
        n = read_num_samples(db)
    except TsrxError as exc:
        return 0, [BadSample(str(path), name, 0, str(exc))]
    if n == 0:
        return 0, [BadSample(str(path), name, 0, "empty split: num-samples is 0")]
    bad = []
    for i in range(1, n + 1):
        try:
            label, hr, lr = read_raw(db, i)
            check_label(label, voc_type, max_len)
            decode_pair(hr, lr, i, (32, 128), (16, 64), mask=False)
        except SampleProblem as exc:
            bad.append(BadSample(str(path), name, i, str(exc)))
    return n, bad


def contact_sheet(splits: list[tuple[str, Path]], per_split: int, out: str | Path) -> Path:
    """A PNG of the first samples of each split as the model sees them: LR (16x64, shown
    at 4x) | HR (32x128, shown at 2x), the raw label underneath."""
    scale, pad, text_h, title_h = 2, 6, 14, 18
    cell_w, cell_h = 128 * scale * 2 + pad, 32 * scale + text_h
    cols = 3
    font = ImageFont.load_default(size=12)
    blocks = []
    for name, path in splits:
        db = LazyLmdb(path)
        n = min(per_split, read_num_samples(db))
        rows = -(-n // cols) if n else 0
        block = Image.new(
            "RGB", (cols * (cell_w + pad) + pad, title_h + rows * (cell_h + pad)), "white"
        )
        draw = ImageDraw.Draw(block)
        draw.text((pad, 2), f"{name} ({path})", fill="black", font=font)
        for k in range(n):
            x = pad + (k % cols) * (cell_w + pad)
            y = title_h + (k // cols) * (cell_h + pad)
            try:
                label, hr_b, lr_b = read_raw(db, k + 1)
                hr, lr = decode_pair(hr_b, lr_b, k + 1, (32, 128), (16, 64), False)
            except SampleProblem as exc:
                draw.text((x, y), f"#{k + 1}: {exc}"[:60], fill="red", font=font)
                continue
            lr_img = Image.fromarray(lr[:3].transpose(1, 2, 0)).resize(
                (128 * scale, 32 * scale), Image.Resampling.NEAREST
            )
            hr_img = Image.fromarray(hr[:3].transpose(1, 2, 0)).resize(
                (128 * scale, 32 * scale), Image.Resampling.NEAREST
            )
            block.paste(lr_img, (x, y))
            block.paste(hr_img, (x + 128 * scale + pad, y))
            draw.text((x, y + 32 * scale + 1), f"#{k + 1} {label!r}", fill="black", font=font)
        blocks.append(block)
    width = max(b.width for b in blocks)
    sheet = Image.new("RGB", (width, sum(b.height for b in blocks)), "white")
    y = 0
    for b in blocks:
        sheet.paste(b, (0, y))
        y += b.height
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
