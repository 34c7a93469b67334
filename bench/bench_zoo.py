"""Item 6: train-step and eval throughput of every SR backbone of experiments/zoo.toml.

The backbones are the zoo's runs (each variant's resolved ``[model.sr]``), so a backbone
added to the zoo gets its rows without touching this file. Per backbone, on one fixed
random batch of its own channel count (16x64 -> 32x128): the train step is forward, MSE
against a random HR, backward and an Adam update (the zoo's recipe); eval is a no-grad
forward in eval mode. Rows carry the exact parameter count.

The text-prior backbones (TPGSR = ``tsrn_tl_cascade``, TATT) are not in the zoo (their
experiment needs a CRNN's weights, experiments/text_prior.toml) but get rows too: each runs
coupled to its prior generator, a CRNN with seeded weights (speed does not depend on them),
as ``coupling = "text_prior"`` builds it; the generator runs and trains with the SR network,
and the train step's loss is the same MSE (the text-prior loss and TATT's rotated pairs
are left out: a few elementwise terms next to two forward passes).

    python -m bench --only zoo [--smoke] [--device cuda] [--precision bf16]
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


TEXT_PRIOR = (("tpgsr", "tsrn_tl_cascade"), ("tatt", "tatt"))


def _build(table: dict, prior: dict | None):
    """The backbone, or a text-prior backbone with its generator behind the same call."""
    from torch import nn

    from tsrx.models.joint import JointModel
    from tsrx.registry import RECOGNIZERS, SR_BACKBONES

    sr = SR_BACKBONES.build(table, "model.sr")
    if prior is None:
        return sr

    class Coupled(nn.Module):
        def __init__(self):
            super().__init__()
            generator = RECOGNIZERS.build(prior, "model.prior")
            self.joint = JointModel(sr=sr, prior=generator, coupling="text_prior")
            self.in_channels = sr.in_channels

        def forward(self, lr):
            return self.joint({"lr": lr})["sr"]

    return Coupled()


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


def run(
    smoke: bool = False, device: str = "cpu", precision: str = "fp32", zoo: Path = ZOO
) -> list[dict]:
    import torch
    import torch.nn.functional as F

    import tsrx.plugins

    tsrx.plugins.load_plugins()
    size = SMOKE if smoke else (FULL_CUDA if device.startswith("cuda") else FULL)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    dtype = torch.bfloat16 if precision == "bf16" else None
    rows = []
    runs = [(name, table, None) for name, table in backbones(zoo)]
    runs += [(name, {"type": sr}, {"type": "crnn"}) for name, sr in TEXT_PRIOR]
    for name, table, prior in runs:
        torch.manual_seed(0)
        model = _build(table, prior).to(dev)
        # trained parameters (a text-prior model also holds its generator's frozen copy)
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
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
            "prior": prior,
            "parameters": params,
            "batch": b,
            "device": device,
            "precision": precision,
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
