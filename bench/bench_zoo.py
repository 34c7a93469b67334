"""Item 6: train-step and eval throughput of every SR backbone of experiments/zoo.toml.

The backbones are the zoo's runs (each variant's resolved ``[model.sr]``), so a backbone
added to the zoo gets its rows without touching this file. Per backbone, on one fixed
random batch of its own channel count (16x64 -> 32x128): the train step is forward, MSE
against a random HR, backward and an Adam update (the zoo's recipe); eval is a no-grad
forward in eval mode. Rows carry the exact parameter count.

    python -m bench --only zoo [--smoke] [--device cuda] [--amp bf16]
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import row

ZOO = Path(__file__).resolve().parent.parent / "experiments" / "zoo.toml"
FULL = {"batch": 16, "warmup": 1, "reps": 3}
SMOKE = {"batch": 2, "warmup": 0, "reps": 1}  # 2: the STN heads batch-normalise
FULL_CUDA = {"batch": 64, "warmup": 5, "reps": 20}


def backbones(zoo: Path = ZOO) -> list[tuple[str, dict]]:
    """(run name, [model.sr] table) of each zoo run, in the file's order."""
    from tsrx.config.experiment import load_experiment

    return [
        (run.name.split(",", 1)[0], dict(run.config["model"]["sr"]))
        for run in load_experiment(zoo).runs
    ]


def _timed(fn, warmup: int, reps: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def run(smoke: bool = False, device: str = "cpu", amp: str = "none", zoo: Path = ZOO) -> list[dict]:
    import torch
    import torch.nn.functional as F

    import tsrx.plugins
    from tsrx.registry import SR_BACKBONES

    tsrx.plugins.load_plugins()
    size = SMOKE if smoke else (FULL_CUDA if device.startswith("cuda") else FULL)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    dtype = torch.bfloat16 if amp == "bf16" else None
    rows = []
    for name, table in backbones(zoo):
        torch.manual_seed(0)
        model = SR_BACKBONES.build(table, "model.sr").to(dev)
        params = sum(p.numel() for p in model.parameters())
        c, b = model.in_channels, size["batch"]
        lr = torch.rand(b, c, 16, 64, device=dev)
        hr = torch.rand(b, c, 32, 128, device=dev)
        optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.5, 0.999)
        )

        # defaults bind this iteration's objects (the closures run before the next one)
        def train_step(model=model, optimizer=optimizer, lr=lr, hr=hr):
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.mse_loss(model(lr).float(), hr)
            loss.backward()
            optimizer.step()

        def eval_step(model=model, lr=lr):
            model.eval()
            with (
                torch.no_grad(),
                torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None),
            ):
                model(lr)

        detail = {
            "backbone": table["type"],
            "options": table,
            "parameters": params,
            "batch": b,
            "device": device,
            "amp": amp,
        }
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        train_s = _timed(train_step, size["warmup"] or 0, size["reps"], sync)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        eval_s = _timed(eval_step, size["warmup"] or 0, size["reps"], sync)
        rows.append(
            row(
                "zoo",
                f"{name} train step",
                b / train_s,
                "samples/s",
                seconds=train_s,
                peak_gpu_mib=peak,
                **detail,
            )
        )
        rows.append(row("zoo", f"{name} eval", b / eval_s, "samples/s", seconds=eval_s, **detail))
    return rows
