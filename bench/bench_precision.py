"""bf16 against fp32 where a user would see the difference (issue 25's agreement figures).

The speed of bf16 is bench_train's (``tsrx bf16`` rows, timed in the same rounds as the fp32
baseline and tsrx fp32); here is what it changes, on a synthetic TextZoom-format set:

- **Training**: two Trainers built from one experiment file (TSRN, reference options and
  optimizer, batch ``BATCH``), one with ``train.precision = "bf16"``, from the same initial
  weights on the same batches; per step the relative difference of the loss,
  ``|bf16 - fp32| / fp32``, over the first ``STEPS`` steps (median and max).
- **Evaluation**: the fp32-trained model after those steps, evaluated twice by
  ``evaluate_config`` (``eval.precision`` fp32, then bf16) on the synthetic test splits:
  the PSNR and SSIM difference of the averages (target: PSNR within 0.05 dB) and each judge's
  accuracy difference in points (target: within 0.5). Judges: those that bring trained
  weights (ppocr, easyocr); CRNN, ASTER and MORAN have no trained weights on a bench machine,
  and a random-weight judge reads nothing under either precision (an agreement that says
  nothing), so they are left out and the rows say which judges read.
- **Judges in bf16** (``eval.judge_precision``): the same model evaluated with the judges
  reading in fp32 and in bf16 (the SR forward fp32 in both): each judge's accuracy
  difference on the SR, bicubic and HR rows (their speed: bench_judges, each judge timed in
  both precisions in alternating rounds). ppocr computes in onnxruntime and reads the same
  either way (its rows show 0).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench.common import TSRN_EXPERIMENT, row

STEPS, BATCH, TRAIN_IMAGES, TEST = 100, 16, 400, [200, 200, 200]
SMOKE = {"steps": 3, "batch": 2, "train": 8, "test": [3, 3, 3]}
PSNR_TARGET_DB = 0.05
ACC_TARGET_POINTS = 0.5
JUDGES = ("ppocr", "easyocr")


def trained_judges() -> tuple[list, list[str]]:
    """The judges with their own trained weights that this machine has, and why others not."""
    from tsrx.engine.judges import Judge
    from tsrx.errors import TsrxError
    from tsrx.registry import RECOGNIZERS

    judges, notes = [], []
    for name in JUDGES:
        if name not in RECOGNIZERS:
            notes.append(f"{name}: no plugin registers it here")
            continue
        try:
            rec = RECOGNIZERS.build({"type": name}, f"bench.{name}").eval()
        except TsrxError as exc:
            notes.append(f"{name}: {exc}")
            continue
        judges.append(Judge(name, f"{name} (its own weights)", rec))
    return judges, notes


def train_losses(workdir: Path, root: Path, batch: int, steps: int) -> tuple[dict, object]:
    """The first ``steps`` losses per precision, and the fp32 Trainer's model."""
    import torch

    from tsrx.config.experiment import load_experiment
    from tsrx.engine.distributed import DistEnv
    from tsrx.engine.trainer import Trainer

    path = workdir / "bench_precision.toml"
    path.write_text(
        TSRN_EXPERIMENT.format(name="bench_precision", root=root.as_posix(), synth="", batch=batch)
    )
    losses, model = {}, None
    for precision in ("fp32", "bf16"):
        config = load_experiment(path, [f"train.precision={precision}"]).runs[0].config
        run_dir = workdir / f"run-{precision}"
        run_dir.mkdir()
        trainer = Trainer(config, run_dir, DistEnv(), torch.device("cpu"))
        batches = trainer._batches()  # the run's own batch order: the same for both
        losses[precision] = [trainer.train_step(next(batches))["loss"] for _ in range(steps)]
        if precision == "fp32":
            model = trainer.model
        trainer.close()
    return losses, model


def run(smoke: bool = False) -> list[dict]:
    """Rows: the losses' relative difference, the PSNR / SSIM / per-judge ACC differences."""
    from tsrx.data.synth import synthesize
    from tsrx.engine.evaluator import evaluate_config, evaluation_sets

    steps, batch = (SMOKE["steps"], SMOKE["batch"]) if smoke else (STEPS, BATCH)
    train, test = (SMOKE["train"], SMOKE["test"]) if smoke else (TRAIN_IMAGES, TEST)
    with tempfile.TemporaryDirectory(prefix="tsrx-bench-precision-") as tmp:
        root = Path(tmp) / "synth"
        synthesize(root, train=train, test=test, seed=0, fonts="builtin")
        start = time.perf_counter()
        losses, model = train_losses(Path(tmp), root, batch, steps)
        train_s = time.perf_counter() - start
        judges, notes = trained_judges()
        config = {"data": {"root": str(root)}}
        sets = evaluation_sets(config, root)
        results, seconds = {}, {}
        # (SR forward, judges): fp32 both, the SR forward in bf16, the judges in bf16; the
        # bicubic and HR rows too (what the judges read there does not depend on the SR
        # forward), nothing from the reading store (its time is the judges' own)
        for precision, judge_precision in (("fp32", "fp32"), ("bf16", "fp32"), ("fp32", "bf16")):
            start = time.perf_counter()
            results[precision, judge_precision] = evaluate_config(
                model,
                sets,
                config,
                judges=judges,
                precision=precision,
                judge_precision=judge_precision,
                with_predictions=False,
                baselines=True,
                reading_store=False,
            )
            seconds[f"{precision} SR, {judge_precision} judges"] = time.perf_counter() - start

    rel = [abs(b - f) / max(abs(f), 1e-12) for f, b in zip(losses["fp32"], losses["bf16"])]
    common = {"steps": steps, "batch": batch, "train_images": train, "train_s": train_s}
    rows = [
        row(
            "precision",
            f"first {steps} training losses: median |bf16 - fp32| / fp32",
            statistics.median(rel),
            "rel. diff",
            max_rel_diff=max(rel),
            step_of_max=rel.index(max(rel)) + 1,
            fp32_first_last=[losses["fp32"][0], losses["fp32"][-1]],
            bf16_first_last=[losses["bf16"][0], losses["bf16"][-1]],
            **common,
        ),
        row(
            "precision",
            f"first {steps} training losses: max |bf16 - fp32| / fp32",
            max(rel),
            "rel. diff",
            relative_diffs=[round(r, 6) for r in rel],
            **common,
        ),
    ]
    exact, low = results["fp32", "fp32"]["average"], results["bf16", "fp32"]["average"]
    images = sum(test)
    detail = {
        "images": images,
        "synthetic": True,
        "model": f"TSRN after {steps} fp32 steps",
        "eval_s": seconds,
    }
    psnr_diff = abs(low["psnr"] - exact["psnr"])
    rows.append(
        row(
            "precision",
            "eval: |PSNR bf16 - fp32| (average of the splits)",
            psnr_diff,
            "dB",
            f"<= {PSNR_TARGET_DB}",
            psnr_diff <= PSNR_TARGET_DB,
            psnr_fp32=exact["psnr"],
            psnr_bf16=low["psnr"],
            **detail,
        )
    )
    rows.append(
        row(
            "precision",
            "eval: |SSIM bf16 - fp32| (average of the splits)",
            abs(low["ssim"] - exact["ssim"]),
            "",
            ssim_fp32=exact["ssim"],
            ssim_bf16=low["ssim"],
            **detail,
        )
    )
    for j in judges:
        a, b = exact["acc_by_judge"][j.name], low["acc_by_judge"][j.name]
        # rounded: 3 images of 600 are 0.5 points, which float arithmetic makes 0.5000000000000001
        diff = round(abs(b - a) * 100, 9)
        rows.append(
            row(
                "precision",
                f"eval: |ACC bf16 - fp32|, judge {j.name}",
                diff,
                "points",
                f"<= {ACC_TARGET_POINTS}",
                diff <= ACC_TARGET_POINTS,
                acc_fp32=a,
                acc_bf16=b,
                **detail,
            )
        )
    rows += judge_precision_rows(results["fp32", "fp32"], results["fp32", "bf16"], judges, seconds)
    for note in notes:
        rows.append(row("precision", f"judge left out: {note}", None, ""))
    return rows


def judge_precision_rows(exact: dict, low: dict, judges: list, seconds: dict) -> list[dict]:
    """``eval.judge_precision = "bf16"`` against fp32, the SR forward fp32 in both: each
    judge's accuracy difference in points on each row (SR, bicubic, HR), with the
    evaluations' seconds (sequential: their speed is bench_judges' per-judge rows, timed
    in alternating rounds)."""
    rows = []
    for j in judges:
        for name, a, b in (
            ("SR", exact["average"], low["average"]),
            (
                "bicubic",
                exact["baselines"]["bicubic"]["average"],
                low["baselines"]["bicubic"]["average"],
            ),
            ("HR", exact["baselines"]["hr"]["average"], low["baselines"]["hr"]["average"]),
        ):
            acc, acc_low = a["acc_by_judge"][j.name], b["acc_by_judge"][j.name]
            diff = round(abs(acc_low - acc) * 100, 9)  # as above: 0.5 points stays 0.5
            rows.append(
                row(
                    "precision",
                    f"judges in bf16: |ACC bf16 - fp32|, judge {j.name}, {name} row",
                    diff,
                    "points",
                    f"<= {ACC_TARGET_POINTS}",
                    diff <= ACC_TARGET_POINTS,
                    acc_fp32=acc,
                    acc_bf16=acc_low,
                    computes_in_torch=bool(list(j.recognizer.parameters())),
                    eval_s=seconds,
                )
            )
    return rows
