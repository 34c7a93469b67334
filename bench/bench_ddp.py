"""Item 5: DDP on the CPU with 1, 2 and 4 gloo processes, through ``tsrx train --nproc``.

Weak scaling: each rank keeps the same batch (the global batch grows with the ranks), so
perfect scaling would multiply samples/s by the number of processes. The rate is the
trainer's own ``samples_per_s`` from ``metrics.jsonl`` (global samples per second, data
loading included), median over the steps after the first. Efficiency =
rate(n) / (n x rate(1)).

On a machine with fewer cores than processes this measures DDP's overhead (processes
sharing cores, gloo all-reduce, start-up), not scaling; the table says how many cores
there were.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import row

FULL = {"procs": (1, 2, 4), "per_rank_batch": 16, "steps": 6, "sr": '{ type = "tsrn" }'}
SMOKE = {
    "procs": (1, 2),
    "per_rank_batch": 2,
    "steps": 3,
    "sr": '{ type = "tsrn", blocks = 1, hidden_units = 8, stn = false }',
}

EXPERIMENT = """\
name = "bench_ddp_{n}"
seed = 0

[data]
root = "{root}"
synth = {{ train = {train}, test = [2, 2, 2], seed = 0 }}
train = {{ type = "textzoom", roots = ["train1"] }}
test.easy = {{ type = "textzoom", roots = ["test/easy"] }}
num_workers = 0

[model]
sr = {sr}

[train]
steps = {steps}
batch_size = {batch}
log_every = 1
val_every = 1000000
ckpt_every = 1000000
selectors = ["best_psnr"]

[eval]
batch_size = 2
"""


def _tsrx() -> list[str]:
    script = Path(sys.executable).parent / "tsrx"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tsrx"]


def train_rate(workdir: Path, n: int, sizes: dict) -> tuple[float | None, dict]:
    """Median global samples/s of an n-process run after its first step, and run details."""
    exp = workdir / f"bench_ddp_{n}.toml"
    exp.write_text(
        EXPERIMENT.format(
            n=n,
            root=(workdir / "synth").as_posix(),
            sr=sizes["sr"],
            steps=sizes["steps"],
            batch=sizes["per_rank_batch"] * n,
            train=sizes["per_rank_batch"] * max(sizes["procs"]) * sizes["steps"],
        )
    )
    cmd = _tsrx() + [
        "train",
        str(exp),
        "--nproc",
        str(n),
        "--device",
        "cpu",
        "--runs-dir",
        str(workdir / "runs"),
    ]
    # keep ranks from each starting a full set of intra-op threads on a small machine
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    metrics = list((workdir / "runs").glob(f"bench_ddp_{n}/*/metrics.jsonl"))
    if proc.returncode != 0 or not metrics:
        return None, {"exit_code": proc.returncode, "stderr": proc.stderr.strip()[-500:]}
    lines = [json.loads(x) for x in metrics[0].read_text().splitlines()]
    rates = [x["samples_per_s"] for x in lines if x["kind"] == "train"][1:]
    return statistics.median(rates), {"rates": rates, "exit_code": 0}


def run(smoke: bool = False) -> list[dict]:
    """Rows: samples/s and efficiency per process count."""
    sizes = SMOKE if smoke else FULL
    cores = os.cpu_count()
    rows, one = [], None
    with tempfile.TemporaryDirectory(prefix="tsrx-bench-ddp-") as tmp:
        for n in sizes["procs"]:
            rate, detail = train_rate(Path(tmp), n, sizes)
            if n == 1:
                one = rate
            eff = rate / (n * one) if rate and one else None
            note = "overhead, not scaling" if n > (cores or 1) else "scaling"
            rows.append(
                row(
                    "ddp",
                    f"{n} gloo process(es), {sizes['per_rank_batch']}/rank",
                    rate,
                    "samples/s",
                    None,
                    rate is not None,
                    efficiency=eff,
                    cores=cores,
                    reads_as=note,
                    steps=sizes["steps"],
                    omp_threads=os.environ.get("OMP_NUM_THREADS", "1"),
                    **detail,
                )
            )
            if n > 1:
                rows.append(
                    row(
                        "ddp", f"{n} processes: efficiency ({note}, {cores} cores)", eff, "fraction"
                    )
                )
    return rows
