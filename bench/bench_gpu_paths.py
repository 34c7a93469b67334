"""GPU-only paths of the TSRN: CUDA graphs, compile, bf16, channels_last, data on the device.

Why: a 2.7 M-parameter TSRN on a large GPU is bound by kernel launches and by its input, not
by arithmetic. This measures, on the GPU the suite runs on, the evaluation forward (batch 64,
eval mode) as plain eager float32, bf16 autocast, channels_last input, ``torch.compile``
(compile time reported) and replayed from a CUDA graph (shapes are static in evaluation);
peak memory per variant; the train step eager, with ``cudnn.benchmark`` and replayed whole
from a CUDA graph (CUDA only); and the data path with the decoded data set kept on the device
(uint8 tensors, a random batch gathered and converted per step) against what the train
step consumes. Without CUDA it runs the same code on the CPU at tiny sizes (the CUDA graph
row then says it was skipped), so ``tests/test_bench.py`` keeps it working.

    python -m bench.bench_gpu_paths [--smoke] [--device cuda] [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import atomic_write_json, interleaved, machine, row

FULL = {"batch": 64, "warmup": 5, "reps": 30, "dataset": 17367}  # TextZoom train size
SMOKE = {"batch": 2, "warmup": 1, "reps": 2, "dataset": 64}


def _peak_mib(device: str, call) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    call()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def eval_variants(sizes: dict, device: str) -> tuple[dict, dict]:
    """Callables for the eval forward variants, and the compile time of the compiled one."""
    import torch

    from tsrx.registry import SR_BACKBONES

    torch.manual_seed(0)
    model = SR_BACKBONES.build({"type": "tsrn"}, "bench.sr").to(device).eval()
    lr = torch.rand(sizes["batch"], 4, 16, 64, device=device)
    lr_cl = lr.contiguous(memory_format=torch.channels_last)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def eager(x=lr):
        with torch.no_grad():
            return model(x)

    def bf16():
        with torch.no_grad(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            return model(lr)

    calls = {
        "eval fp32": eager,
        "eval bf16 autocast": bf16,
        "eval fp32 channels_last input": lambda: eager(lr_cl),
    }
    info: dict = {}
    if cuda:  # compiling on the CPU dry run would take minutes: not what it checks
        compiled = torch.compile(model)
        start = time.perf_counter()
        _no_grad(compiled, lr)
        sync()
        info["compile_s"] = time.perf_counter() - start
        calls["eval fp32 torch.compile"] = lambda: _no_grad(compiled, lr)
        replay, info["graph_max_diff"] = _graphed_eval(model, lr)
        calls["eval fp32 CUDA graph"] = replay
        # the same model with tsrx's own GRU scan instead of cuDNN's nn.GRU
        scan = SR_BACKBONES.build({"type": "tsrn", "recurrence": "scan"}, "bench.sr")
        scan.load_state_dict(model.state_dict())
        scan.to(device).eval()
        calls["eval fp32, tsrx GRU scan"] = lambda: _no_grad(scan, lr)
        replay, info["scan_graph_max_diff"] = _graphed_eval(scan, lr)
        calls["eval fp32 CUDA graph, tsrx GRU scan"] = replay
        info["scan_max_diff"] = float((_no_grad(scan, lr) - eager()).abs().max())
    return calls, info


def _capture(call, warmup: int = 3):
    """(CUDA graph, the captured call's output): ``call`` runs ``warmup`` times on a side
    stream first, as capture requires. The output holds a result only after a replay."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    return graph, out


def _graphed_eval(model, lr):
    """(replay callable, max abs difference of the replayed output from eager)"""
    import torch

    static_in = lr.clone()
    graph, static_out = _capture(lambda: _no_grad(model, static_in))
    graph.replay()
    torch.cuda.synchronize()
    diff = float((static_out - _no_grad(model, lr)).abs().max())
    return (lambda: (graph.replay(), static_out)[1]), diff


def train_graph_variants(sizes: dict, device: str) -> tuple[dict, dict]:
    """The TSRN train step (reference settings: mask + STN, loss 100 (MSE + 1e-4 GPL), clip
    0.25, Adam) eager, eager with ``cudnn.benchmark``, and captured whole (forward, backward,
    clip, Adam) in one CUDA graph and replayed, each with both GRU recurrences: cuDNN's
    (``nn.GRU``) and tsrx's own scan (``recurrence = "scan"``). On a large GPU this small
    model is bound by kernel launches, which a graph removes. Each graph's loss is checked
    against an eager twin that took the same steps from the same weights."""
    import torch

    from bench.bench_train import make_batch
    from tsrx.registry import SR_BACKBONES, SR_LOSSES

    loss_fn = SR_LOSSES.build({"type": "textzoom"}, "loss.sr")
    batch = make_batch(sizes["batch"], device=device)
    lr, hr = batch["lr"], batch["hr"]

    def make(recurrence):
        torch.manual_seed(0)
        table = {"type": "tsrn", "recurrence": recurrence}
        net = SR_BACKBONES.build(table, "bench.sr").to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999), capturable=True)
        return net, opt

    def step(net, opt):
        loss = loss_fn(net(lr), hr)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.25)
        opt.step()
        return loss

    def captured(recurrence):
        """(eager twin's step, graph replay, loss rel. diff of the replay vs the twin)"""
        eager_net, eager_opt = make(recurrence)
        graph_net, graph_opt = make(recurrence)
        warm = 3
        graph, static_loss = _capture(lambda: step(graph_net, graph_opt), warm)
        for _ in range(warm + 1):  # the eager twin takes the same steps: warm-up + replay
            want = step(eager_net, eager_opt).item()
        graph.replay()
        torch.cuda.synchronize()
        diff = abs(static_loss.item() - want) / abs(want)
        return (
            (lambda: step(eager_net, eager_opt)),
            (lambda: (graph.replay(), static_loss)[1]),
            diff,
        )

    calls, info = {}, {}
    for recurrence, label in (("nn.GRU", "cuDNN GRU"), ("scan", "tsrx GRU scan")):
        eager, replay, diff = captured(recurrence)

        def eager_benchmark(eager=eager):
            torch.backends.cudnn.benchmark = True
            try:
                return eager()
            finally:
                torch.backends.cudnn.benchmark = False

        calls[f"train fp32 eager, {label}"] = eager
        calls[f"train fp32 eager, {label}, cudnn.benchmark"] = eager_benchmark
        calls[f"train fp32 CUDA graph (whole step), {label}"] = replay
        info[f"train fp32 CUDA graph (whole step), {label}"] = diff
    return calls, info


def gru_probe(device: str) -> list[dict]:
    """Why the TSRN train step is slow on a GPU: one GRU block (C = 64, batch 64) forward +
    backward as nn.GRU (cuDNN) and as tsrx's scan, along the height (T = 16, N = 4096) and
    the width (T = 64, N = 1024); for nn.GRU also without biases and with the batch cut into
    8 chunks, to see what its backward kernel's time depends on."""
    import torch
    from torch import nn

    from tsrx_builtin.tsrn import GruBlock

    calls = {}
    for along_height, (t, n) in ((True, (16, 4096)), (False, (64, 1024))):
        axis = "height" if along_height else "width"
        x = torch.randn(64, 64, 16, 64, device=device).contiguous(memory_format=torch.channels_last)
        for recurrence in ("nn.GRU", "scan"):
            block = GruBlock(64, along_height, recurrence).to(device)
            xg = x.clone().requires_grad_()

            def run(block=block, xg=xg):
                block(xg).sum().backward()

            calls[f"GRU block along {axis}, {recurrence}: fwd+bwd"] = run
        seq = torch.randn(t, n, 64, device=device, requires_grad=True)
        for bias in (True, False):
            gru = nn.GRU(64, 32, bidirectional=True, bias=bias).to(device)
            calls[f"nn.GRU T={t} N={n}, bias={bias}: fwd+bwd"] = lambda gru=gru, seq=seq: (
                gru(seq)[0].sum().backward()
            )
        gru = nn.GRU(64, 32, bidirectional=True).to(device)
        calls[f"nn.GRU T={t} N={n} in 8 chunks: fwd+bwd"] = lambda gru=gru, seq=seq: [
            gru(part)[0].sum().backward() for part in seq.chunk(8, dim=1)
        ]
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    times = interleaved(calls, 3, 10, sync=sync)
    return [
        row("gpu", name, 1000 * t["wall_median"], "ms", device=device, wall_s=t["wall"])
        for name, t in times.items()
    ]


def _no_grad(fn, x):
    import torch

    with torch.no_grad():
        return fn(x)


def device_data_path(sizes: dict, device: str):
    """A decoded data set held on the device as uint8, and one batch's gather + convert."""
    import torch

    g = torch.Generator().manual_seed(0)
    n = sizes["dataset"]
    lr = torch.randint(0, 256, (n, 4, 16, 64), dtype=torch.uint8, generator=g).to(device)
    hr = torch.randint(0, 256, (n, 4, 32, 128), dtype=torch.uint8, generator=g).to(device)
    batch = sizes["batch"]

    def next_batch():
        index = torch.randint(0, n, (batch,), device=device)
        return (
            lr.index_select(0, index).float().div_(255),
            hr.index_select(0, index).float().div_(255),
        )

    return next_batch, (lr.numel() + hr.numel()) / 2**20


def run(smoke: bool = False, device: str = "cpu") -> list[dict]:
    import torch

    sizes = SMOKE if smoke else FULL
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None
    calls, info = eval_variants(sizes, device)
    if cuda:
        train_calls, train_info = train_graph_variants(sizes, device)
        calls.update(train_calls)
        info.update(train_info)
    next_batch, data_mib = device_data_path(sizes, device)
    calls["data: device-resident batch (gather + uint8 -> float)"] = next_batch
    times = interleaved(calls, sizes["warmup"], sizes["reps"], sync=sync)
    n = sizes["batch"]
    rows = []
    fp32 = times["eval fp32"]["wall_median"]
    for name, t in times.items():
        rate = n / t["wall_median"]
        detail = {
            "batch": n,
            "reps": sizes["reps"],
            "device": device,
            "wall_s": t["wall"],
            "peak_gpu_mib": _peak_mib(device, calls[name]),
        }
        if "compile" in name:
            detail["compile_s"] = info["compile_s"]
        if name == "eval fp32 CUDA graph":
            detail["max_abs_diff_vs_eager"] = info["graph_max_diff"]
        if name == "eval fp32 CUDA graph, tsrx GRU scan":
            detail["max_abs_diff_vs_eager"] = info["scan_graph_max_diff"]
        if name == "eval fp32, tsrx GRU scan":
            detail["max_abs_diff_vs_cudnn_gru"] = info["scan_max_diff"]
        if name.startswith("train fp32 CUDA graph"):
            detail["loss_rel_diff_vs_eager"] = info[name]
        if name.startswith("data"):
            detail["dataset_samples"] = sizes["dataset"]
            detail["dataset_on_device_mib"] = data_mib
        rows.append(row("gpu", name, rate, "samples/s", **detail))
        if name.startswith("eval") and name != "eval fp32":
            rows.append(row("gpu", f"{name} / eval fp32", fp32 / t["wall_median"], "x"))
        reference = "train fp32 eager, cuDNN GRU"
        if name.startswith("train") and name != reference:
            ratio = times[reference]["wall_median"] / t["wall_median"]
            rows.append(row("gpu", f"{name} / {reference}", ratio, "x"))
    for name, diff in info.items():
        if name.startswith("train fp32 CUDA graph"):
            rows.append(
                row(
                    "gpu", f"{name}: loss vs eager twin", diff, "rel. diff", "<= 1e-3", diff <= 1e-3
                )
            )
    if cuda:
        rows += gru_probe(device)
    else:
        for name in ("eval fp32 torch.compile", "eval fp32 CUDA graph", "train fp32 CUDA graph"):
            rows.append(row("gpu", name, None, "samples/s", skipped="CUDA only"))
    return rows


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results_gpu_paths.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.smoke, args.device)
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        print(f"{r['name']:<60} {value:>12} {r['unit']}")
    atomic_write_json(
        Path(args.out),
        {"machine": machine(), "smoke": args.smoke, "device": args.device, "rows": rows},
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
