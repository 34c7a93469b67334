"""Item 2: evaluating a TextZoom-size test set end to end, and what the metrics cost.

A synthetic test set with TextZoom's split sizes (easy 1619, medium 1411, hard 1343 =
4,373 images) is written once; then ``tsrx.engine.evaluator.evaluate_model`` runs TSRN
(eval mode) with CRNN as the judge over it, as ``tsrx eval`` does (``textzoom`` protocol,
batch 50, decoded cache on, the data set's default). The CRNN has random weights: speed
does not depend on them, and the accuracy figure is not the point here.

Then the first batches of each split (1,050 images), held in memory, are timed part by
part: the model (SR + CRNN read + greedy decode), and the metrics
(``MetricAccumulator.update``: PSNR, SSIM, accuracy) on the SR outputs. Target: metrics
under 10% of the model time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import row

SPLITS = {"easy": 1619, "medium": 1411, "hard": 1343}
SMOKE_SPLITS = {"easy": 6, "medium": 5, "hard": 5}
BATCH = 50
BREAKDOWN_BATCHES = 7  # per split: 21 batches, 1,050 images in the full run
TARGET_METRICS_FRACTION = 0.10
KW = dict(
    hr_size=[32, 128], lr_size=[16, 64], mask=True, voc_type="all", max_len=100, skip_bad=False
)


def build_models(device: str):
    """TSRN (reference options) as a JointModel, and a CRNN judge; both in eval mode."""
    import torch

    from tsrx.models.joint import JointModel
    from tsrx.registry import RECOGNIZERS, SR_BACKBONES

    torch.manual_seed(0)
    model = JointModel(sr=SR_BACKBONES.build({"type": "tsrn"}, "bench.sr")).to(device).eval()
    judge = JointModel(recognizer=RECOGNIZERS.build({"type": "crnn"}, "bench.judge")).to(device)
    return model, judge.eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run(smoke: bool = False, device: str = "cpu", precision: str = "fp32") -> list[dict]:
    """Rows: end-to-end images/s, the model / metrics / loading split, the metrics fraction."""
    import contextlib

    import torch
    from torch.utils.data import DataLoader

    from tsrx.data.loader import collate_batch
    from tsrx.data.synth import synthesize
    from tsrx.data.textzoom import TextZoomDataset
    from tsrx.engine.evaluator import evaluate_model
    from tsrx.engine.judges import Judge
    from tsrx.engine.metrics import MetricAccumulator

    splits = SMOKE_SPLITS if smoke else SPLITS
    n_images = sum(splits.values())
    model, judge_model = build_models(device)
    judges = [Judge("crnn", "crnn (random weights)", judge_model.recognizer)]
    autocast = (
        torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    with tempfile.TemporaryDirectory(prefix="tsrx-bench-eval-") as tmp:
        root = Path(tmp) / "synth"
        start = time.perf_counter()
        synthesize(root, train=0, test=list(splits.values()), seed=0, fonts="builtin")
        synth_s = time.perf_counter() - start
        start = time.perf_counter()
        datasets = {
            name: TextZoomDataset(
                str(root), [f"test/{name}"], cache=True, cache_dir=str(Path(tmp) / "cache"), **KW
            )
            for name in splits
        }
        cache_s = time.perf_counter() - start

        with autocast:
            evaluate_model(
                model,
                {k: [v[i] for i in range(2)] for k, v in datasets.items()},
                batch_size=2,
                device=device,
                judges=judges,
            )  # warm-up
            _sync(device)
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            result = evaluate_model(
                model,
                datasets,
                protocol="textzoom",
                batch_size=BATCH,
                device=device,
                judges=judges,
            )
            _sync(device)
            total_s = time.perf_counter() - start
            peak_mib = (
                torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
            )

            load_s, batches = 0.0, []
            for name, ds in datasets.items():
                start = time.perf_counter()
                for batch in DataLoader(ds, batch_size=BATCH, collate_fn=collate_batch):
                    batches.append((name, batch))
                load_s += time.perf_counter() - start
            # the split into parts is timed on the first BREAKDOWN_BATCHES of each split
            per_split = {
                name: [b for b in batches if b[0] == name][:BREAKDOWN_BATCHES] for name in splits
            }
            batches = [b for name in splits for b in per_split[name]]
            n_parts = sum(len(b["label"]) for _, b in batches)
            batches = [
                (name, {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()})
                for name, b in batches
            ]
            outputs = []
            _sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                for _name, batch in batches:
                    sr = model(batch)["sr"]
                    outputs.append((sr, judges[0].read(sr)))
            _sync(device)
            model_s = time.perf_counter() - start
            acc = MetricAccumulator("textzoom", list(splits))
            start = time.perf_counter()
            with torch.no_grad():
                for (name, batch), (sr, preds) in zip(batches, outputs):
                    acc.update(name, sr, batch["hr"], preds, batch["label"])
                acc.compute()
            _sync(device)
            metrics_s = time.perf_counter() - start

    fraction = metrics_s / model_s
    judged = result["average"]["n"]
    common = {"images": n_images, "batch_size": BATCH, "device": device, "precision": precision}
    return [
        row(
            "eval",
            "end to end (evaluate_model: TSRN + CRNN judge + metrics)",
            n_images / total_s,
            "images/s",
            seconds=total_s,
            evaluated=judged,
            peak_gpu_mib=peak_mib,
            **common,
        ),
        row(
            "eval",
            "model only (SR + CRNN + decode)",
            n_parts / model_s,
            "images/s",
            seconds=model_s,
            **{**common, "images": n_parts},
        ),
        row(
            "eval",
            "metrics only (PSNR + SSIM + accuracy)",
            n_parts / metrics_s,
            "images/s",
            seconds=metrics_s,
            **{**common, "images": n_parts},
        ),
        row(
            "eval",
            "loading only (cached DataLoader + collate)",
            n_images / load_s,
            "images/s",
            seconds=load_s,
            **common,
        ),
        row(
            "eval",
            "metrics time / model time",
            fraction,
            "fraction",
            f"< {TARGET_METRICS_FRACTION:g}",
            fraction < TARGET_METRICS_FRACTION,
        ),
        row(
            "eval",
            "set-up: synthesise + build decoded cache (once)",
            synth_s + cache_s,
            "s",
            synthesise_s=synth_s,
            cache_build_s=cache_s,
        ),
    ]
