"""Each process computes with the cores it was given (issue 14, threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_engine_helpers import prepare, tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx.engine import threads
from tsrx.errors import TsrxError


def decide(monkeypatch, env: dict, ranks: int = 1, cores: int = 8, torch_default: int = 8):
    for key in ("TSRX_THREADS", "SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: torch_default)
    return threads.decide_threads(ranks)


def test_order_of_sources(monkeypatch):
    assert decide(monkeypatch, {"TSRX_THREADS": "3", "SLURM_CPUS_PER_TASK": "5"}) == (
        3,
        "TSRX_THREADS",
    )
    assert decide(monkeypatch, {"SLURM_CPUS_PER_TASK": "5"}) == (5, "SLURM_CPUS_PER_TASK")
    assert decide(monkeypatch, {}) == (8, "torch default")
    n, source = decide(monkeypatch, {}, ranks=4)  # 4 local ranks share the 8 cores
    assert n == 2 and "ranks on this machine (4)" in source
    assert decide(monkeypatch, {}, cores=2, torch_default=64)[0] == 2  # bounded by the affinity
    assert decide(monkeypatch, {"OMP_NUM_THREADS": "1"}, torch_default=1) == (1, "OMP_NUM_THREADS")
    with pytest.raises(TsrxError, match="TSRX_THREADS='zero'"):
        decide(monkeypatch, {"TSRX_THREADS": "zero"})


def test_a_run_records_its_threads_and_sets_them(tmp_path, tiny_data, tiny_plugin):
    exp = write_experiment(tmp_path, tiny_data, tiny_plugin)
    run_dir = prepare(exp, tmp_path / "runs", ["train.steps=2", "data.num_workers=1"])
    code = (
        "import sys, torch\nfrom tsrx.engine.run import run_training\n"
        "run_training(sys.argv[1], device='cpu')\nprint('threads', torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)],
        capture_output=True,
        text=True,
        env={**env, "TSRX_THREADS": "1"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["threads"]["threads"] == 1 and meta["threads"]["source"] == "TSRX_THREADS"
    assert out.stdout.strip().splitlines()[-1] == "threads 1"


def test_loader_workers_use_one_thread():
    from tsrx.data.loader import build_loader, single_thread_worker

    class Items:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            import torch

            return {
                "lr": torch.zeros(1),
                "hr": torch.zeros(1),
                "label": str(torch.get_num_threads()),
                "index": i,
            }

    loader = build_loader(Items(), 2, num_workers=1)
    assert loader.worker_init_fn is single_thread_worker
    assert next(iter(loader))["label"] == ["1", "1"]
