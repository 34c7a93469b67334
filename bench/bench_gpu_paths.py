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
        static_in = lr.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm-up on a side stream, as graph capture requires
                model(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad():
            static_out = model(static_in)
        calls["eval fp32 CUDA graph"] = lambda: (graph.replay(), static_out)[1]
        graph.replay()  # capture runs nothing: the output holds a result only after a replay
        sync()
        info["graph_max_diff"] = float((static_out - eager()).abs().max())
    return calls, info


def train_graph_variants(sizes: dict, device: str) -> tuple[dict, dict]:
    """The TSRN train step (reference settings: mask + STN, loss 100 (MSE + 1e-4 GPL), clip
    0.25, Adam) eager, eager with ``cudnn.benchmark``, and captured whole (forward, backward,
    clip, Adam) in one CUDA graph and replayed: on a large GPU this small model is bound by
    kernel launches, which a graph removes. The graph's loss is checked against an eager
    model that took the same steps from the same weights."""
    import torch

    from bench.bench_train import make_batch
    from tsrx.registry import SR_BACKBONES, SR_LOSSES

    loss_fn = SR_LOSSES.build({"type": "textzoom"}, "loss.sr")
    batch = make_batch(sizes["batch"], device=device)
    lr, hr = batch["lr"], batch["hr"]

    def make():
        torch.manual_seed(0)
        net = SR_BACKBONES.build({"type": "tsrn"}, "bench.sr").to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999), capturable=True)
        return net, opt

    def step(net, opt):
        loss = loss_fn(net(lr), hr)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.25)
        opt.step()
        return loss

    eager_net, eager_opt = make()
    graph_net, graph_opt = make()
    warm = 3
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up steps on a side stream, as capture requires
        for _ in range(warm):
            step(graph_net, graph_opt)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(graph_net, graph_opt)
    for _ in range(warm + 1):  # the eager twin takes the same steps: warm-up + the replay
        want = step(eager_net, eager_opt).item()
    graph.replay()
    torch.cuda.synchronize()
    info = {"graph_loss_rel_diff": abs(static_loss.item() - want) / abs(want)}

    def eager_benchmark():
        torch.backends.cudnn.benchmark = True
        try:
            return step(eager_net, eager_opt)
        finally:
            torch.backends.cudnn.benchmark = False

    calls = {
        "train fp32 eager": lambda: step(eager_net, eager_opt),
        "train fp32 eager, cudnn.benchmark": eager_benchmark,
        "train fp32 CUDA graph (whole step)": lambda: (graph.replay(), static_loss)[1],
    }
    return calls, info


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
        if name == "train fp32 CUDA graph (whole step)":
            detail["loss_rel_diff_vs_eager"] = info["graph_loss_rel_diff"]
        if name.startswith("data"):
            detail["dataset_samples"] = sizes["dataset"]
            detail["dataset_on_device_mib"] = data_mib
        rows.append(row("gpu", name, rate, "samples/s", **detail))
        if name.startswith("eval") and name != "eval fp32":
            rows.append(row("gpu", f"{name} / eval fp32", fp32 / t["wall_median"], "x"))
        if name.startswith("train") and name != "train fp32 eager":
            eager_s = times["train fp32 eager"]["wall_median"]
            rows.append(row("gpu", f"{name} / train fp32 eager", eager_s / t["wall_median"], "x"))
    if cuda:
        diff = info["graph_loss_rel_diff"]
        rows.append(
            row(
                "gpu",
                "train CUDA graph: loss vs eager twin",
                diff,
                "rel. diff",
                "<= 1e-3",
                diff <= 1e-3,
            )
        )
    else:
        for name in (
            "eval fp32 torch.compile",
            "eval fp32 CUDA graph",
            "train fp32 CUDA graph (whole step)",
        ):
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
