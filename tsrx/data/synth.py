"""Synthetic data in TextZoom's exact LMDB format: ``OUT/train1``, ``OUT/train2``, ``OUT/test/{easy,medium,hard}``
and, when asked, ``OUT/val/{easy,medium,hard}`` (a validation split for checkpoint selection).

Every code path that reads TextZoom reads this, so a fresh machine (no data set, no system
fonts, no network) can train and evaluate end to end. HR crops are rendered words of
varying size (height about 16-64 px, wider than tall), colour, font and slight rotation.
LR images come from a camera-like chain applied to the HR crop: Gaussian blur, x2 area
downscale, sensor noise, JPEG; its strength grows easy -> medium -> hard (hard also loses
contrast and is slightly misaligned with its HR, as TextZoom's two-focal-length pairs are).
Both images are stored as PNG at their native sizes, as in TextZoom.

Each sample draws from its own generator seeded by (seed, split, index), so a sample does
not depend on how many came before it or on the process that made it. The validation
splits have split codes of their own, so they share no random stream (no image) with test.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import string
import tempfile
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageFont

from tsrx.data.lmdb_io import write_lmdb
from tsrx.data.synth_words import WORDS
from tsrx.errors import TsrxError

TEST_SPLITS = ("easy", "medium", "hard")
SPLIT_CODES = {
    "train1": 0,
    "easy": 1,
    "medium": 2,
    "hard": 3,
    "train2": 4,
    "val_easy": 5,
    "val_medium": 6,
    "val_hard": 7,
}
# TextZoom's training sets: train1 14,573 and train2 2,794 pairs (TextZoom paper, Table 1).
# Synthetic data keeps that ratio, so experiments name both roots on either data set.
TRAIN2_PER_TRAIN1 = 2794 / 14573


def default_train2(train: int) -> int:
    return round(train * TRAIN2_PER_TRAIN1)


FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
)
BUILTIN = "builtin"


@dataclass(frozen=True)
class Degradation:
    """Ranges (low, high) of the LR chain's parameters for one difficulty level."""

    blur: tuple[float, float]  # Gaussian sigma, in HR pixels, before the x2 downscale
    noise: tuple[float, float]  # Gaussian noise sigma on 0-255, after downscaling
    jpeg: tuple[int, int]  # JPEG quality
    contrast: tuple[float, float]  # LR contrast kept (1 = unchanged)
    shift: float  # max LR/HR misalignment, in HR pixels
    text_px: tuple[int, int]  # HR font size in pixels (small text is harder)


LEVELS = {
    "easy": Degradation(
        blur=(0.6, 1.0),
        noise=(1.0, 3.0),
        jpeg=(80, 95),
        contrast=(0.95, 1.0),
        shift=0.0,
        text_px=(30, 44),
    ),
    "medium": Degradation(
        blur=(1.0, 1.4),
        noise=(2.0, 5.0),
        jpeg=(55, 80),
        contrast=(0.85, 0.95),
        shift=0.0,
        text_px=(24, 38),
    ),
    "hard": Degradation(
        blur=(1.3, 1.8),
        noise=(3.0, 7.0),
        jpeg=(40, 65),
        contrast=(0.7, 0.9),
        shift=1.0,
        text_px=(20, 34),
    ),
}


def find_fonts(which: str = "all") -> list[str]:
    """Font sources in a fixed order: the built-in font, then system TrueType fonts if asked."""
    if which not in ("all", BUILTIN):
        raise TsrxError(f"fonts must be 'all' or 'builtin', got {which!r}")
    fonts = [BUILTIN]
    if which == "all":
        found = []
        for base in FONT_DIRS:
            if os.path.isdir(base):
                for dirpath, _, files in os.walk(base):
                    found += [
                        os.path.join(dirpath, f)
                        for f in files
                        if f.lower().endswith((".ttf", ".otf"))
                        and not any(s in f for s in ("Math", "Symbol", "Emoji"))
                    ]
        fonts += sorted(found)
    return fonts


_font_cache: dict[tuple[str, int], ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}


def load_font(source: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    key = (source, size)
    if key not in _font_cache:
        if source == BUILTIN:
            # Pillow >= 10.1 embeds a scalable font (needs FreeType, which its wheels include)
            _font_cache[key] = ImageFont.load_default(size=size)
        else:
            _font_cache[key] = ImageFont.truetype(source, size)
    return _font_cache[key]


def make_word(rng: np.random.Generator) -> str:
    """A label: a word in lower, Title or UPPER case, a number, or a short code."""
    kind = rng.random()
    if kind < 0.7:
        word = WORDS[rng.integers(len(WORDS))]
        case = rng.random()
        return word if case < 0.4 else (word.capitalize() if case < 0.7 else word.upper())
    if kind < 0.85:
        return str(rng.integers(0, 10 ** int(rng.integers(1, 6))))
    pool = string.ascii_uppercase + string.digits
    code = "".join(pool[i] for i in rng.integers(0, len(pool), size=int(rng.integers(2, 7))))
    if rng.random() < 0.2:
        cut = int(rng.integers(1, len(code)))
        code = code[:cut] + "-" + code[cut:]
    return code


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Background and text colours at least 90 gray levels apart."""
    while True:
        bg = rng.integers(0, 256, size=3)
        fg = rng.integers(0, 256, size=3)
        luma = np.array([0.299, 0.587, 0.114])
        if abs(float(bg @ luma) - float(fg @ luma)) >= 90:
            return bg, fg


def render_hr(
    text: str, rng: np.random.Generator, fonts: list[str], level: Degradation
) -> Image.Image:
    """A word rendered as a scene-text-like crop, RGB, native size."""
    source = fonts[int(rng.integers(len(fonts)))]
    size = int(rng.integers(level.text_px[0], level.text_px[1] + 1))
    font = load_font(source, size)
    left, top, right, bottom = font.getbbox(text)
    # the line's height, not the word's: "ace" and "Sky" get crops of the same height
    _, top_ref, _, bottom_ref = font.getbbox("Hgy")
    top, bottom = min(top, top_ref), max(bottom, bottom_ref)
    tw, th = int(right - left), int(bottom - top)  # whole pixels (Pillow's boxes are ints)
    pad_x = int(rng.integers(2, max(3, size // 2)))
    pad_y = int(rng.integers(1, max(2, size // 4)))
    w, h = tw + 2 * pad_x, th + 2 * pad_y
    bg, fg = _colours(rng)
    # background: base colour, a gentle linear gradient and a faint texture
    ramp = np.linspace(-1.0, 1.0, w)[None, :, None] * rng.uniform(-25, 25, size=3)
    canvas = np.clip(bg[None, None, :] + ramp + rng.normal(0, 3, (h, w, 3)), 0, 255)
    ink = Image.new("L", (w, h), 0)
    from PIL import ImageDraw

    ImageDraw.Draw(ink).text((pad_x - left, pad_y - top), text, font=font, fill=255)
    angle = float(rng.uniform(-3.0, 3.0))
    if abs(angle) > 0.3:
        ink = ink.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False)
    alpha = np.asarray(ink, dtype=np.float64)[:, :, None] / 255.0
    rgb = canvas * (1 - alpha) + fg[None, None, :] * alpha
    img = Image.fromarray(rgb.round().astype(np.uint8), "RGB")
    # real HR crops are photos too: a touch of softness
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 0.5))))


def degrade(hr: Image.Image, rng: np.random.Generator, level: Degradation) -> Image.Image:
    """The LR image: misalign (hard), blur, x2 area downscale, contrast, noise, JPEG."""
    img = hr
    if level.shift > 0:
        dx, dy = rng.uniform(-level.shift, level.shift, size=2)
        scale = float(rng.uniform(0.97, 1.03))
        w, h = img.size
        cx, cy = w / 2, h / 2
        # inverse affine map (output -> input) for a zoom about the centre plus a shift
        coeffs = (1 / scale, 0, cx - cx / scale + dx, 0, 1 / scale, cy - cy / scale + dy)
        img = img.transform(
            img.size,
            Image.Transform.AFFINE,
            coeffs,
            resample=Image.Resampling.BILINEAR,
            fillcolor=tuple(int(v) for v in np.asarray(img)[0, 0]),
        )
    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(*level.blur))))
    w, h = img.size
    img = img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.float64)
    contrast = float(rng.uniform(*level.contrast))
    arr = arr.mean() + (arr - arr.mean()) * contrast
    arr = arr + rng.normal(0, float(rng.uniform(*level.noise)), arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(rng.integers(level.jpeg[0], level.jpeg[1] + 1)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def make_sample(seed: int, split: str, index: int, fonts: list[str]) -> tuple[str, bytes, bytes]:
    """(label, HR PNG, LR PNG) of one sample; ``split`` is train1, train2, easy, medium or hard."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    if split in ("train1", "train2"):
        level = LEVELS[TEST_SPLITS[int(rng.integers(3))]]
    else:
        level = LEVELS[split.removeprefix("val_")]
    text = make_word(rng)
    hr = render_hr(text, rng, fonts, level)
    lr = degrade(hr, rng, level)
    return text, png_bytes(hr), png_bytes(lr)


@dataclass(frozen=True)
class SynthManifest:
    """What was generated, written as ``synth.json`` next to the LMDBs."""

    train: int
    test: list[int]
    seed: int
    fonts: list[str]
    train2: int = 0
    format: str = "textzoom-lmdb"
    val: list[int] | None = None


# Samples per task handed to a worker process: large enough that pickling and the pool's
# bookkeeping (about a millisecond) stay small against the ~2-3 ms a sample takes
SAMPLES_PER_TASK = 32
# Below this many samples in all, worker processes cost more to start than they save
MIN_PARALLEL_SAMPLES = 256


def default_workers() -> int:
    """Worker processes for synthesis: the CPUs this process may run on, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _sample_at(seed: int, split: str, fonts: list[str], index: int) -> tuple[str, bytes, bytes]:
    return make_sample(seed, split, index, fonts)


def _samples(
    pool: Executor | None, seed: int, split: str, n: int, fonts: list[str]
) -> Iterator[tuple[str, bytes, bytes]]:
    """Samples 1..n in order, made by the pool's workers when there is one. A sample depends
    only on (seed, split, index), so the bytes are the same whoever makes them."""
    if pool is None:
        return (make_sample(seed, split, i, fonts) for i in range(1, n + 1))
    make = partial(_sample_at, seed, split, fonts)
    return pool.map(make, range(1, n + 1), chunksize=SAMPLES_PER_TASK)


def _write_split(
    path: Path, seed: int, split: str, n: int, fonts: list[str], pool: Executor | None = None
) -> None:
    write_lmdb(path, _samples(pool, seed, split, n, fonts))


def _write_val(
    out: Path, seed: int, val: list[int], fonts: list[str], pool: Executor | None = None
) -> None:
    for split, n in zip(TEST_SPLITS, val):
        _write_split(out / "val" / split, seed, f"val_{split}", n, fonts, pool)


def _pool(workers: int, samples: int) -> ProcessPoolExecutor | None:
    """Worker processes for ``samples`` samples, or None where one process is the better
    choice. Forked where the platform can (as torch's DataLoader workers are: the workers run
    only numpy and Pillow, and a user's script needs no ``__main__`` guard), else spawned."""
    if workers <= 1 or samples < MIN_PARALLEL_SAMPLES:
        return None
    if multiprocessing.current_process().daemon:  # a daemonic process may have no children
        return None
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context)


def add_val(out: str | Path, val: list[int], seed: int, fonts: str = "builtin") -> bool:
    """Add ``out/val/{easy,medium,hard}`` to an existing synthetic set that has none (a set
    made before validation splits existed); True if written. Built aside, renamed in place."""
    out = Path(out)
    if not any(val) or (out / "val").exists():
        return False
    tmp = Path(tempfile.mkdtemp(prefix=".val.tmp-", dir=out))
    pool = _pool(default_workers(), sum(val))
    try:
        _write_val(tmp, seed, list(val), find_fonts(fonts), pool)
        os.replace(tmp / "val", out / "val")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    manifest_path = out / "synth.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        manifest["val"] = list(val)
        part = out / ".synth.json.tmp"
        part.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(part, manifest_path)
    return True


def synthesize(
    out: str | Path,
    train: int = 2000,
    test: list[int] | tuple[int, ...] = (300, 300, 300),
    seed: int = 0,
    fonts: str = "all",
    train2: int | None = None,
    val: list[int] | tuple[int, ...] = (0, 0, 0),
    workers: int | None = None,
) -> SynthManifest:
    """Write ``out/train1``, ``out/train2``, ``out/test/{easy,medium,hard}`` and, when ``val``
    has a non-zero count, ``out/val/{easy,medium,hard}``.

    ``out`` must be absent or empty. ``train2`` defaults to TextZoom's train2/train1 ratio
    (no ``train2`` folder when it comes to 0). ``workers`` processes make the samples
    (default: one per CPU, at most 8; 1: this process alone); the files are byte for byte
    the same for any number.

    Built in a temporary sibling folder and renamed into place, so an interrupted run never
    leaves a half data set that later looks complete.
    """
    out = Path(out)
    train2 = default_train2(train) if train2 is None else train2
    if len(test) != 3 or min(test) < 0 or train < 0 or train2 < 0 or len(val) != 3 or min(val) < 0:
        raise TsrxError(
            f"synth: --train and --train2 must be >= 0, --test and --val three counts >= 0 "
            f"(easy medium hard), got train={train} train2={train2} test={list(test)} "
            f"val={list(val)}"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TsrxError(
            f"synth: {out} already exists and is not empty; remove it or pick another folder"
        )
    font_list = find_fonts(fonts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    total = train + train2 + sum(test) + sum(val)
    pool = _pool(default_workers() if workers is None else workers, total)
    try:
        _write_split(tmp / "train1", seed, "train1", train, font_list, pool)
        if train2:
            _write_split(tmp / "train2", seed, "train2", train2, font_list, pool)
        for split, n in zip(TEST_SPLITS, test):
            _write_split(tmp / "test" / split, seed, split, n, font_list, pool)
        if any(val):
            _write_val(tmp, seed, list(val), font_list, pool)
        manifest = SynthManifest(
            train=train,
            test=list(test),
            seed=seed,
            fonts=font_list,
            train2=train2,
            val=list(val) if any(val) else None,
        )
        (tmp / "synth.json").write_text(json.dumps(asdict(manifest), indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return manifest
