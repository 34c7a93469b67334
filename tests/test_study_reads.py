"""experiments/study_reads.toml (issue 22) and its stages: TPGSR and TATT guided by the
pretrained english_g2 generator (study_reads/tpgsr.toml, tatt.toml), CPU-sized. They validate
as the study needs them, a shrunk copy of both trains, validates and ends with the test table
(bicubic row included), and the study orders every stage before its joint grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
FILES = {name: EXPERIMENTS / "study_reads" / f"{name}.toml" for name in ("tpgsr", "tatt")}


def _runs() -> dict[str, dict]:
    from tsrx.config.experiment import load_experiment

    out = {}
    for name, file in FILES.items():
        (run,) = load_experiment(file).runs
        out[name] = run.config
    return out


def test_both_runs_read_a_frozen_pretrained_prior_and_the_quickstarts_data():
    from tsrx.config.experiment import load_experiment

    runs = _runs()
    assert set(runs) == {"tpgsr", "tatt"}
    quick = load_experiment(EXPERIMENTS / "quickstart.toml").runs[0].config
    for name, cfg in runs.items():
        model = cfg["model"]
        assert model["sr"]["type"] == {"tpgsr": "tsrn_tl_cascade", "tatt": "tatt"}[name]
        # the small, bicubic-residual backbone of the quickstart's TSRN
        assert model["sr"]["residual"] == "bicubic" and model["sr"]["stn"] is False
        assert model["coupling"] == "text_prior" and model["prior"]["type"] == "easyocr"
        assert model["freeze"] == ["prior"] and not model.get("prior_weights")
        assert cfg["data"] == quick["data"]  # selected on val, reported on test
        assert set(cfg["data"]["val"]) == set(cfg["data"]["test"]) == {"easy", "medium", "hard"}
        assert cfg["train"]["selectors"] == ["best_psnr"]
        assert cfg["eval"]["judges"] == {"ppocr": {"type": "ppocr", "optional": True}}
        assert cfg["eval"]["baselines"] is True
        assert cfg["eval"]["val_judges"] == []  # validation: PSNR only, ppocr reads the test
    assert runs["tatt"]["model"]["rotate_train"] == 5.0
    assert runs["tatt"]["loss"]["consistency"]["type"] == "tsc"


def test_the_frozen_generator_has_no_prior_loss_and_builds():
    """english_g2 from the wheel, no file: the model builds, the prior has its 97 classes and
    only the SR and (TATT) consistency terms train."""
    pytest.importorskip("easyocr_en_models", reason="the judge extra is not installed")
    from tsrx.models.build import build_model

    for name, cfg in _runs().items():
        model = build_model(cfg, load_init=False)
        assert model.sr.prior_classes == 97
        assert not any(p.requires_grad for p in model.prior.parameters())
        want = {"sr", "consistency"} if name == "tatt" else {"sr"}
        assert set(model.loss_terms()) == want


@pytest.mark.slow
def test_both_runs_train_validate_and_report_with_tiny_steps(workdir):
    pytest.importorskip("easyocr_en_models", reason="the judge extra is not installed")
    tiny = [
        "data.synth.train=24",
        "data.synth.val=[4, 4, 4]",
        "data.synth.test=[4, 4, 4]",
        "train.steps=2",
        "train.batch_size=4",
        "train.val_every=2",
        "train.ckpt_every=2",
        "train.val_batch_size=4",
        "eval.batch_size=4",
    ]
    run_dirs = []
    for name, file in FILES.items():
        proc = subprocess.run(
            [sys.executable, "-m", "tsrx", "train", str(file)]
            + [a for s in tiny for a in ("--set", s)],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "COLUMNS": "200", "TSRX_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        run_dirs.append(workdir / "runs" / f"reads_{name}" / "main")
    for run_dir in run_dirs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["state"] == "completed"
        assert summary["final"]["baselines"]["bicubic"]["average"]["psnr"] > 0
        assert (run_dir / "best_psnr_model.pth").is_file()
        train = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        terms = {t for m in train if m.get("kind") == "train" for t in m.get("terms", {})}
        assert "prior" not in terms  # the generator is frozen: no text-prior loss


def test_the_study_runs_every_stage_before_its_joint_grid_on_the_pretrained_recognizer():
    """One `tsrx submit`: quickstart, text_aware, the heads on english_g2, TPGSR, TATT, then the
    8 joint runs, each after all of them and loading the head of its own type; ppocr (trained
    with by no run) reads only their test split."""
    from tsrx.launch.study import plan_study

    study = plan_study(EXPERIMENTS / "study_reads.toml")
    names = [s.experiment for s in study.stages]
    assert names[-1] == "reads_study"
    assert set(names[:-1]) == {
        "quickstart",
        "text_aware",
        "reads_heads",
        "reads_tpgsr",
        "reads_tatt",
    }
    assert names.index("quickstart") < names.index("text_aware")
    joint = study.of(study.stages[-1])
    assert len(joint) == 8 and study.launcher == "local"
    for r in joint:
        cfg = r.planned.spec.config
        assert cfg["model"]["recognizer"]["type"] == "easyocr" and cfg["model"]["freeze"] == [
            "recognizer"
        ]
        assert cfg["eval"]["val_judges"] == ["own"] and "ppocr" in cfg["eval"]["judges"]
        ups = {u.stage.experiment: u for u in r.upstream}
        assert set(ups) == set(names[:-1])
        head = ups["reads_heads"].planned.spec.config["model"]["head"]["type"]
        assert head == cfg["model"]["head"]["type"]
