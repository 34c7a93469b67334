"""Where the TSRN train step spends its time, and how much arithmetic it has to do.

Why: a speed lever is worth taking only where the profile shows the time. This prints
``torch.profiler``'s per-operator table (self CPU time) for the tsrx TSRN train step or the
baseline's, and the step's FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``
(convolutions, matmuls and the GRU's matmuls; elementwise work is not counted), from which
``bench_train`` reports the fraction of the compute floor reached.

    python -m bench.profile_tsrn [--model tsrx|baseline] [--batch 64] [--steps 2] [--rows 25]
                                 [--device cuda]
"""

from __future__ import annotations

import argparse


def build(model: str, batch: int, seed: int = 0, device: str = "cpu"):
    """(step callable, module) for the tsrx TSRN or the baseline, reference settings."""
    import torch

    from bench.baseline_tsrn import BaselineImageLoss, BaselineTSRN, baseline_train_step
    from bench.bench_train import make_batch
    from tsrx.registry import SR_BACKBONES, SR_LOSSES

    torch.manual_seed(seed)
    sr = SR_BACKBONES.build({"type": "tsrn", "mask": True, "stn": True}, "model.sr").train()
    data = make_batch(batch, device=device)
    sr.to(device)
    if model == "baseline":
        net = BaselineTSRN().to(device)
        net.load_state_dict(sr.state_dict())
        net.train()
        loss_fn = BaselineImageLoss()
    else:
        net, loss_fn = sr, SR_LOSSES.build({"type": "textzoom"}, "loss.sr")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def step() -> float:
        return baseline_train_step(net, loss_fn, optimizer, data["lr"], data["hr"])

    return step, net


def count_flops(model: str = "tsrx", batch: int = 64, train: bool = True) -> float:
    """FLOPs of one train step (forward + backward) or one eval forward, counted by torch."""
    import torch

    from bench.bench_train import make_batch
    from bench.common import flop_counter

    step, net = build(model, batch)
    counter = flop_counter()
    if train:
        with counter:
            step()
    else:
        net.eval()
        lr = make_batch(batch)["lr"]
        with counter, torch.no_grad():
            net(lr)
    return float(counter.get_total_flops())


def profile_table(
    model: str = "tsrx", batch: int = 64, steps: int = 2, rows: int = 25, device: str = "cpu"
) -> str:
    """The per-operator table: self CPU time, or on CUDA self device (kernel) time."""
    from torch._C._profiler import _ExperimentalConfig
    from torch.profiler import ProfilerActivity, profile

    step, _ = build(model, batch, device=device)
    step()  # warm-up: mkldnn primitive caches / cuDNN plans, allocator
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # the GRU scan runs its row groups on worker threads (plugins/gru_scan.py): profile them
    every_thread = _ExperimentalConfig(profile_all_threads=True)
    with profile(activities=activities, experimental_config=every_thread) as prof:
        for _ in range(steps):
            step()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tsrx", "baseline"], default="tsrx")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (kernel times on CUDA)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flops = count_flops(args.model, args.batch)
    print(f"{args.model}: train step at batch {args.batch}: {flops / 1e9:.1f} GFLOP counted")
    print(profile_table(args.model, args.batch, args.steps, args.rows, args.device))


if __name__ == "__main__":
    main()
