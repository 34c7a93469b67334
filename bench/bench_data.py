"""Data loading speed: samples/s for raw LMDB decode + preprocessing, the decoded cache, and
the cached data set through the DataLoader with the training collate (0 and 2 workers).

    python bench/bench_data.py                 # synthetic data (4,000 training pairs)
    python bench/bench_data.py --root /data/TextZoom --roots train1 train2
    python bench/bench_data.py --smoke         # seconds; what the tests run

Prints a table and writes JSON (``--out``, default ``bench/results/bench_data.json``).
Timings are wall clock on whatever else the machine is doing; the cache build is reported
once (it happens once per data set and preprocessing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

KW = dict(
    hr_size=[32, 128], lr_size=[16, 64], mask=True, voc_type="all", max_len=100, skip_bad=False
)


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _time_items(ds, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        ds[i]
    return time.perf_counter() - start


def _time_loader(ds, batch_size: int, workers: int, epochs: int = 2) -> tuple[int, float]:
    """Samples and seconds of the last epoch (the first one starts the persistent workers)."""
    from tsrx.data.loader import ResumableSampler, build_loader

    sampler = ResumableSampler(len(ds), seed=0)
    loader = build_loader(ds, batch_size, sampler, num_workers=workers)
    n, took = 0, 0.0
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        n, start = 0, time.perf_counter()
        for batch in loader:
            n += len(batch["label"])
            sampler.advance(len(batch["label"]))
        took = time.perf_counter() - start
    return n, took


def run(
    smoke: bool = False,
    root: str | None = None,
    roots: list[str] | None = None,
    batch_size: int = 64,
) -> list[dict]:
    """One row per path: {"path", "samples", "seconds", "samples_per_s", ...}."""
    from tsrx.data.textzoom import TextZoomDataset

    tmp = None
    if root is None:
        from tsrx.data.synth import synthesize

        tmp = tempfile.TemporaryDirectory(prefix="tsrx-bench-data-")
        root = str(Path(tmp.name) / "synth")
        synthesize(root, train=256 if smoke else 4000, test=[0, 0, 0], seed=0, fonts="builtin")
        roots = ["train1"]
    roots = roots or ["train1"]
    cache_dir = tempfile.mkdtemp(prefix="tsrx-bench-cache-")
    rows = []
    try:
        raw = TextZoomDataset(root, roots, cache=False, **KW)
        n = min(len(raw), 256 if smoke else 4000)
        took = _time_items(raw, n)
        rows.append({"path": "raw LMDB decode + preprocess", "samples": n, "seconds": took})

        start = time.perf_counter()
        cached = TextZoomDataset(root, roots, cache=True, cache_dir=cache_dir, **KW)
        build = time.perf_counter() - start
        rows.append({"path": "cache build (once)", "samples": len(cached), "seconds": build})
        took = _time_items(cached, n)
        rows.append({"path": "cached items", "samples": n, "seconds": took})

        for workers in (0, 2):
            count, took = _time_loader(cached, batch_size, workers, epochs=1 if smoke else 2)
            rows.append(
                {
                    "path": f"cached DataLoader + collate, workers={workers}, batch {batch_size}",
                    "samples": count,
                    "seconds": took,
                }
            )
    finally:
        import shutil

        shutil.rmtree(cache_dir, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()
    for r in rows:
        r["samples_per_s"] = _rate(r["samples"], r["seconds"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run (seconds)")
    parser.add_argument("--root", help="a TextZoom root to read instead of synthetic data")
    parser.add_argument("--roots", nargs="+", default=None, help="LMDBs under --root (train1 ...)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_data.json"))
    args = parser.parse_args()
    rows = run(args.smoke, args.root, args.roots, args.batch_size)
    width = max(len(r["path"]) for r in rows)
    print(f"{'path':<{width}}  {'samples':>8}  {'seconds':>8}  {'samples/s':>10}")
    for r in rows:
        print(
            f"{r['path']:<{width}}  {r['samples']:>8}  {r['seconds']:>8.2f}  "
            f"{r['samples_per_s']:>10.0f}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "data",
        "smoke": args.smoke,
        "root": args.root or "synthetic",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "rows": rows,
    }
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp_out, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
