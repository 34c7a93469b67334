"""bench/bench_data.py runs end to end (smoke size) and reports every path."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_data_smoke():
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_data.py"
    spec = importlib.util.spec_from_file_location("bench_data", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(smoke=True)
    paths = [r["path"] for r in rows]
    assert paths[0].startswith("raw LMDB") and paths[2] == "cached items"
    assert any("workers=2" in p for p in paths) and any("workers=0" in p for p in paths)
    assert all(r["samples"] > 0 and r["samples_per_s"] > 0 for r in rows)
