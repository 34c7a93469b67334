"""GPU-only paths of the TSRN: CUDA graphs, compile, bf16, channels_last, data on the device.

Why: a 2.7 M-parameter TSRN on a large GPU is bound by kernel launches and by its input, not
by arithmetic. This measures, on the GPU the suite runs on, the evaluation forward (batch 64,
eval mode) as plain eager float32, bf16 autocast, channels_last input, ``torch.compile``
(compile time reported) and replayed from a CUDA graph (shapes are static in evaluation);
peak memory per variant; and the data path with the decoded data set kept on the device
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
        info["graph_max_diff"] = float((static_out - eager()).abs().max())
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
        if "CUDA graph" in name:
            detail["max_abs_diff_vs_eager"] = info["graph_max_diff"]
        if name.startswith("data"):
            detail["dataset_samples"] = sizes["dataset"]
            detail["dataset_on_device_mib"] = data_mib
        rows.append(row("gpu", name, rate, "samples/s", **detail))
        if name.startswith("eval") and name != "eval fp32":
            rows.append(row("gpu", f"{name} / eval fp32", fp32 / t["wall_median"], "x"))
    if not cuda:
        for name in ("eval fp32 torch.compile", "eval fp32 CUDA graph"):
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
