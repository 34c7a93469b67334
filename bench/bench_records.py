"""Per-image records at scale: write, load and test 500,000 images (tsrx.records, report.stats).

A grid of 100 runs on TextZoom's 4,373 test images is about 440,000 records; a report reads
them all. The rows: file size, write time, load time (what a report pays before any test),
the first decode of every label (done only when strings are asked for), and one paired
comparison (exact McNemar + 10,000 bootstrap replicates) on all images. Synthetic records:
three splits, two judges, model / bicubic / HR rows, labels of 3-12 letters. Target: load
500k rows in under a second (a report over a large grid stays interactive).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import row

ROWS = 500_000
SMOKE_ROWS = 20_000
LOAD_TARGET_S = 1.0


def synthetic(n: int):
    import numpy as np

    from tsrx.records import RecordCollector

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    words = ["".join(rng.choice(letters, rng.integers(3, 13))) for _ in range(2000)]
    labels = [words[i] for i in rng.integers(0, len(words), n)]
    col = RecordCollector(["easy", "medium", "hard"], ["crnn", "ppocr"])
    third = n // 3
    for k, split in enumerate(col.splits):
        lo, hi = k * third, (n if k == 2 else (k + 1) * third)
        rows = {}
        for name in ("model", "bicubic", "hr"):
            right = {j: rng.random(hi - lo) < 0.6 for j in col.judges}
            rows[name] = {
                "psnr": None if name == "hr" else rng.normal(21, 2, hi - lo),
                "ssim": None if name == "hr" else rng.uniform(0.4, 0.9, hi - lo),
                "preds": {
                    j: [t if r else t[::-1] for t, r in zip(labels[lo:hi], right[j])]
                    for j in col.judges
                },
                "correct": {j: right[j].tolist() for j in col.judges},
            }
        col.add(split, list(range(1, hi - lo + 1)), labels[lo:hi], rows)
    return col.build(meta={"protocol": "textzoom", "primary_judge": "crnn"})


def run(smoke: bool = False) -> list[dict]:
    from tsrx.records import read_records, write_records
    from tsrx.report.stats import compare

    n = SMOKE_ROWS if smoke else ROWS
    rec = synthetic(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.records.npz"
        t0 = time.perf_counter()
        write_records(path, rec)
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        loads = []
        for _ in range(3):
            t0 = time.perf_counter()
            back = read_records(path)
            a, b = back.correct("model"), back.correct("bicubic")
            loads.append(time.perf_counter() - t0)
        load_s = sorted(loads)[1]
        t0 = time.perf_counter()
        labels = back.labels
        decode_s = time.perf_counter() - t0
        assert len(labels) == n
        t0 = time.perf_counter()
        compare([a], [b], back.split)
        compare_s = time.perf_counter() - t0
    return [
        row("records", f"file size, {n:,} images", size / 2**20, "MiB", bytes_per_image=size / n),
        row("records", f"write {n:,} images", write_s, "s"),
        row(
            "records",
            f"load {n:,} images (median of 3)",
            load_s,
            "s",
            target=f"< {LOAD_TARGET_S:g} s",
            ok=load_s < LOAD_TARGET_S if not smoke else None,
        ),
        row("records", f"decode {n:,} labels (first access)", decode_s, "s"),
        row("records", f"paired test on {n:,} images (McNemar + 10k bootstrap)", compare_s, "s"),
    ]
