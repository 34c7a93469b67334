"""The shipped experiment files: all validate; the quickstart runs end to end (tiny steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
ENGINE_FILES = [
    "quickstart",
    "text_aware",
    "sr_pretrain",
    "rec_finetune",
    "joint_image",
    "joint_feature",
]


@pytest.mark.parametrize("name", ENGINE_FILES)
def test_experiment_file_validates_and_points_at_synthetic_data(name):
    from tsrx.config.experiment import load_experiment

    exp = load_experiment(EXPERIMENTS / f"{name}.toml")
    for run in exp.runs:
        assert run.config["data"]["root"] == "data/synth"
        assert run.config["data"]["test"].keys() == {"easy", "medium", "hard"}
    real = load_experiment(EXPERIMENTS / f"{name}.toml", ["data.root=/path/to/TextZoom"])
    assert real.runs[0].config["data"]["root"] == "/path/to/TextZoom"


def test_stage_files_say_what_they_load():
    from tsrx.config.experiment import load_experiment

    init = {
        n: load_experiment(EXPERIMENTS / f"{n}.toml").runs[0].config["model"]["init"]
        for n in ("sr_pretrain", "rec_finetune", "joint_image", "joint_feature", "text_aware")
    }
    assert init["sr_pretrain"] == {}
    assert init["rec_finetune"] == {"recognizer": "weights/crnn.pth"}
    assert init["joint_image"]["sr"].endswith("sr_pretrain/main/best_psnr_model.pth")
    assert init["joint_feature"] == {"whole": "weights/joint_composed.pth"}
    # the text-aware fine-tune starts from the quickstart's TSRN, same architecture
    assert init["text_aware"]["sr"].endswith("quickstart/main/best_psnr_model.pth")
    quick, aware = (
        load_experiment(EXPERIMENTS / f"{n}.toml").runs[0].config
        for n in ("quickstart", "text_aware")
    )
    assert aware["model"]["sr"] == quick["model"]["sr"]
    assert aware["loss"]["sr"]["type"] == "text_aware" and aware["loss"]["sr"]["content_weight"] > 0
    combiners = {
        r.config["loss"]["combiner"]["type"]
        for r in load_experiment(EXPERIMENTS / "joint_image.toml").runs
    }
    assert combiners == {"avg", "uncertainty"}


def test_missing_starting_checkpoint_is_named_when_run(workdir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsrx",
            "train",
            str(EXPERIMENTS / "joint_feature.toml"),
            "--run",
            "combiner=avg",
            "--set",
            "data.root=nowhere",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 2
    assert "weights/joint_composed.pth" in proc.stderr and "no such file" in proc.stderr


@pytest.mark.slow
def test_quickstart_end_to_end_with_tiny_steps(workdir):
    """The README's first command, shrunk: synthesises data, trains, prints the final table
    with the bicubic row."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsrx",
            "train",
            str(EXPERIMENTS / "quickstart.toml"),
            "--set",
            "data.synth.train=24",
            "--set",
            "data.synth.test=[4, 4, 4]",
            "--set",
            "train.steps=2",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.val_every=2",
            "--set",
            "eval.batch_size=4",
            "--set",
            "train.val_batch_size=4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for word in (
        "quickstart/main: final model",
        "bicubic",
        "easy",
        "medium",
        "hard",
        "protocol textzoom",
    ):
        assert word in proc.stdout, word
    run_dir = workdir / "runs" / "quickstart" / "main"
    assert (workdir / "data" / "synth" / "train1" / "data.mdb").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "completed"
    assert summary["final"]["baselines"]["bicubic"]["average"]["psnr"] > 0
    assert (run_dir / "best_psnr_model.pth").is_file() and (run_dir / "last.pth").is_file()
    # the first run shows an accuracy: the ppocr judge reads SR, bicubic and HR (judge extra)
    try:
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        assert "left out" in proc.stderr and "rapidocr-onnxruntime" in proc.stderr
    else:
        final = summary["final"]
        assert final["primary_judge"] == "ppocr" and "ACC (ppocr)" in proc.stdout
        for row in (final, final["baselines"]["bicubic"], final["baselines"]["hr"]):
            assert all(v["acc_by_judge"]["ppocr"] is not None for v in row["splits"].values())
        assert final["baselines"]["hr"]["average"]["acc"] >= 0.75  # it reads the HR words
    # the validation selects by PSNR: no judge reads there (val_judges = []), only the final
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (val,) = [json.loads(line)["result"] for line in lines if '"kind": "val"' in line]
    assert val["judges"] == {} and val["average"]["acc"] is None and val["average"]["psnr"] > 0
    # `tsrx train` records itself as the run's job: status knows how long it ran
    from tsrx.launch.status import run_status

    row = run_status(run_dir)
    assert row.state == "completed" and row.elapsed_s is not None and row.job_id
