"""CPU threads on a loaded machine: torch's default thread count against the count tsrx sets.

A TSRN train step (the real ``Trainer.train_step``, reference settings of bench_train) runs in
a fresh process per variant, on an idle machine and next to busy processes that keep all but
``share`` cores working (another job on a shared node). ``default``: torch's own count (one
thread per core, OMP_NUM_THREADS unset); ``set``: ``TSRX_THREADS=share`` applied by
``tsrx.engine.threads.configure_threads``, as a run given ``share`` cores does (Slurm's
cpus_per_task, the local launcher's share). Issue 14 saw ~40 -> ~0.5 samples/s from this.

    python -m bench --only threads [--smoke]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import row

FULL = {"batch": 16, "seconds": 8.0, "min_steps": 2, "model": []}
# CI: a one-block TSRN, so that even an oversubscribed step takes well under a second
SMOKE = {
    "batch": 2,
    "seconds": 0.5,
    "min_steps": 1,
    "model": ['model.sr={type = "tsrn", blocks = 1, hidden_units = 8, stn = false}'],
}


def _spin(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def worker(
    workdir: str, variant: str, batch: int, seconds: float, min_steps: int, overrides: list[str]
) -> dict:
    """One measurement in this (fresh) process; prints and returns its figures."""
    import torch

    if variant == "set":
        from tsrx.engine.threads import configure_threads

        threads = configure_threads()
    else:
        threads = {"threads": torch.get_num_threads(), "source": "torch default"}
    from bench.bench_train import build_trainer, make_batch

    folder = Path(tempfile.mkdtemp(dir=workdir))
    (folder / "synth").symlink_to(Path(workdir) / "synth")
    trainer = build_trainer(folder, batch, "cpu", overrides)
    data = make_batch(batch)
    trainer.train_step(data)  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < min_steps:
        trainer.train_step(data)
        steps += 1
    elapsed = time.perf_counter() - start
    out = {"samples_per_s": steps * batch / elapsed, "steps": steps, "seconds": elapsed, **threads}
    print(json.dumps(out))
    return out


def _measure(workdir: Path, variant: str, share: int, sizes: dict) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TSRX_THREADS")
    }
    if variant == "set":
        env["TSRX_THREADS"] = str(share)
    code = (
        "import json, sys; from bench.bench_threads import worker; "
        "worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), "
        "json.loads(sys.argv[6]))"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(workdir),
            variant,
            str(sizes["batch"]),
            str(sizes["seconds"]),
            str(sizes["min_steps"]),
            json.dumps(sizes["model"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=600,
    )
    if res.returncode != 0:
        raise RuntimeError(f"worker {variant} failed: {res.stderr[-1500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(smoke: bool = False) -> list[dict]:
    from tsrx.data.synth import synthesize
    from tsrx.engine.threads import usable_cores

    sizes = SMOKE if smoke else FULL
    cores = usable_cores()
    share = max(1, cores // 2)
    busy = max(1, cores - share)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        synthesize(workdir / "synth", train=max(sizes["batch"], 8), test=[0, 0, 0], seed=0)
        figures = {}
        for load in ("idle", "loaded"):
            spinners = []
            if load == "loaded":
                stop_at = time.time() + 4 * sizes["seconds"] + 120
                spinners = [
                    mp.get_context("spawn").Process(target=_spin, args=(stop_at,), daemon=True)
                    for _ in range(busy)
                ]
                for p in spinners:
                    p.start()
            try:
                for variant in ("default", "set"):
                    figures[load, variant] = _measure(workdir, variant, share, sizes)
            finally:
                for p in spinners:
                    p.terminate()
                    p.join()
        for (load, variant), f in figures.items():
            what = (
                f"torch default ({f['threads']} threads)"
                if variant == "default"
                else f"TSRX_THREADS={share} ({f['threads']} threads)"
            )
            where = "idle machine" if load == "idle" else f"{busy} busy process(es)"
            rows.append(
                row(
                    "threads",
                    f"{where}, {what}",
                    f["samples_per_s"],
                    "samples/s",
                    batch=sizes["batch"],
                    steps=f["steps"],
                    seconds=round(f["seconds"], 2),
                    threads=f["threads"],
                    source=f["source"],
                    cores=cores,
                )
            )
        ratio = (
            figures["loaded", "set"]["samples_per_s"]
            / figures["loaded", "default"]["samples_per_s"]
        )
        rows.append(
            row(
                "threads",
                "loaded: set threads / torch default",
                ratio,
                "x",
                ">= 1",
                ratio >= 1.0,
                share=share,
                busy_processes=busy,
            )
        )
    return rows


if __name__ == "__main__":
    for r in run(smoke="--smoke" in sys.argv):
        print(r)
