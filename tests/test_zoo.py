"""experiments/zoo.toml: every backbone under one recipe, one report table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsrx.report.collect import Run
from tsrx.report.run_facts import run_facts
from tsrx.report.tables import follows

ZOO = Path(__file__).resolve().parent.parent / "experiments" / "zoo.toml"
BACKBONES = ["tsrn", "srcnn", "vdsr", "srres", "edsr", "rdn", "lapsrn", "esrgan", "tbsrn"]


def test_zoo_has_one_run_per_backbone_with_its_official_mask_and_switches_to_textzoom():
    from tsrx.config.experiment import load_experiment

    runs = load_experiment(ZOO).runs
    assert [r.config["model"]["sr"]["type"] for r in runs] == BACKBONES
    for r in runs:
        assert r.config["data"]["mask"] == (r.config["model"]["sr"]["type"] == "tsrn")
        assert r.config["data"]["root"] == "data/synth"
    real = load_experiment(ZOO, ["data.root=/path/to/TextZoom"]).runs
    assert {r.config["data"]["root"] for r in real} == {"/path/to/TextZoom"}


def test_run_facts_read_parameters_and_median_speed_after_the_first_line():
    lines = [
        {"kind": "run", "parameters": {"sr": 100, "recognizer": 23}},
        {"kind": "train", "samples_per_s": 1.0},
        {"kind": "train", "samples_per_s": 10.0},
        {"kind": "train", "samples_per_s": 30.0},
        {"kind": "train", "samples_per_s": 12.0},
    ]
    assert run_facts(lines) == {"params": 123, "samples/s": 12.0}
    assert run_facts([]) == {"params": None, "samples/s": None}


def test_an_axis_set_with_the_row_value_does_not_split_the_table(tmp_path):
    def run(sr, mask):
        return Run(tmp_path, sr, "zoo", {"model.sr.type": sr, "data.mask": mask}, None)

    runs = [run("tsrn", True), run("srcnn", False), run("vdsr", False)]
    assert follows("data.mask", "model.sr.type", runs)
    assert not follows("data.mask", "model.sr.type", runs + [run("srcnn", True)])
    assert not follows("data.mask", "run", runs)


@pytest.mark.slow
def test_zoo_trains_every_backbone_and_reports_one_table(workdir):
    """Smoke size: 1 step of 2 images per backbone on a tiny synthetic set, then the report."""
    env = {**os.environ, "COLUMNS": "220"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsrx",
            "train",
            str(ZOO),
            "--set",
            "data.synth.train=8",
            "--set",
            "data.synth.test=[2, 2, 2]",
            "--set",
            "data.holdout=2",
            "--set",
            "data.num_workers=0",
            "--set",
            "train.steps=1",
            "--set",
            "train.batch_size=2",
            "--set",
            "train.val_every=1",
            "--set",
            "train.log_every=1",
            "--set",
            "eval.batch_size=2",
            "--set",
            "train.val_batch_size=2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = subprocess.run(
        [sys.executable, "-m", "tsrx", "report", str(ZOO), "--format", "md"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    print(report.stdout)
    table = [line for line in report.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| sr | params | E-ACC") and table[0].rstrip().endswith(
        "| samples/s |"
    )
    rows = {line.split("|")[1].strip(): line for line in table[1:]}
    assert list(rows) == BACKBONES  # one table: data.mask follows the backbone
    assert "| 2,681,677 |" in rows["tsrn"] and "| 3,210,335 |" in rows["tbsrn"]
    assert "| 40,711,704 |" in rows["edsr"] and "| 20,099 |" in rows["srcnn"]
    for line in rows.values():
        assert line.split("|")[-2].strip() != "-"  # samples/s recorded
