"""`tsrx eval` on a synthetic set: the table, the JSON, judges, baselines, foreign formats."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial

import pytest
import torch
from side_by_side import side_by_side
from test_engine_helpers import tiny_data, tiny_plugin, write_experiment  # noqa: F401


def _tsrx(*args, cwd, env=None):
    proc = subprocess.run(
        [sys.executable, "-m", "tsrx", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "COLUMNS": "160",
            "PATH": "/usr/bin:/bin",
            "TSRX_TEST": "1",
            "TSRX_READING_STORE": "off",
            **(env or {}),
        },
    )
    return proc


def _tsrx_side_by_side(*calls, cwd, env=None):
    """Independent ``tsrx`` commands started together (tests/side_by_side.py), one CPU
    thread each: on a 2-core machine two evaluations take the time of one. Their results,
    in the order given. OMP_NUM_THREADS too: with TSRX_THREADS alone, two easyocr
    evaluations side by side spun their OpenMP threads (55 s each instead of 4)."""
    env = {"TSRX_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return side_by_side(*(partial(_tsrx, *args, cwd=cwd, env=env) for args in calls))


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_data, tiny_plugin):
    """A tsrx checkpoint of a tiny SR model and a meijieru-format crnn.pth (random weights:
    this tests the plumbing, not the accuracy)."""
    from tsrx.checkpoint import make_checkpoint, save_checkpoint
    from tsrx.config.experiment import load_experiment
    from tsrx.models.build import build_model
    from tsrx.registry import RECOGNIZERS

    tmp = tmp_path_factory.mktemp("eval")
    config = load_experiment(write_experiment(tmp, tiny_data, tiny_plugin)).runs[0].config
    torch.manual_seed(0)
    model = build_model(config)
    ckpt = save_checkpoint(
        tmp / "sr.pth", make_checkpoint(model.state_dict(), config=config, step=7)
    )
    crnn = tmp / "crnn.pth"
    torch.save(RECOGNIZERS.get("crnn")().state_dict(), crnn)
    return {"tmp": tmp, "ckpt": ckpt, "crnn": crnn, "data": tiny_data, "plugin": tiny_plugin}


def test_eval_prints_one_table_and_writes_json_with_predictions(files):
    out = files["tmp"] / "result.json"
    proc = _tsrx(
        "eval",
        "--ckpt",
        files["ckpt"],
        "--plugin",
        files["plugin"],
        "--data",
        files["data"],
        "--judge",
        f"crnn={files['crnn']}",
        "--batch-size",
        4,
        "--json",
        out,
        "--baselines",
        cwd=files["tmp"],
        env={"TSRX_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    for word in (
        "easy",
        "medium",
        "hard",
        " A ",
        "bicubic",
        "hr",
        "protocol textzoom",
        "batch size 4",
        "crnn (",
    ):
        assert word in proc.stdout, word
    result = json.loads(out.read_text())
    assert result["protocol"] == "textzoom" and result["batch_size"] == 4
    # the evaluation computed with the process's share of the cores, as a run does (issue 14)
    assert result["threads"] == {"threads": 1, "source": "TSRX_THREADS"}
    # the set was made by tsrx.data.synth: the table and the JSON say so (issue 26)
    assert "data: SYNTHETIC" in proc.stdout and result["synthetic_data"] is True
    assert "crnn.pth" in result["recognizer"]
    assert [result["splits"][s]["n"] for s in ("easy", "medium", "hard")] == [6, 6, 6]
    assert result["average"]["n"] == 18
    for split in ("easy", "medium", "hard"):
        preds = result["predictions"][split]
        assert [p["index"] for p in preds] == [1, 2, 3, 4, 5, 6]  # 1-based LMDB indices
        assert all(set(p) == {"index", "label", "pred", "correct"} for p in preds)
        correct = sum(p["correct"] for p in preds) / 6
        assert result["splits"][split]["acc"] == pytest.approx(correct)
    assert result["baselines"]["bicubic"]["average"]["psnr"] > 0
    assert result["baselines"]["hr"]["average"]["psnr"] is None
    assert result["baselines"]["hr"]["average"]["acc"] is not None
    assert not list(files["tmp"].glob(".result.json*"))  # atomic write left no temp file


def test_without_judge_weights_accuracy_is_null_and_says_how_to_get_it(files):
    out = files["tmp"] / "nojudge.json"
    proc = _tsrx(
        "eval",
        "--ckpt",
        files["ckpt"],
        "--plugin",
        files["plugin"],
        "--data",
        files["data"],
        "--json",
        out,
        "--protocol",
        "per-image",
        cwd=files["tmp"],
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["average"]["acc"] is None and result["recognizer"] is None
    assert result["protocol"] == "per-image"
    assert "--judge ppocr" in proc.stdout and "eval.judges" in proc.stdout
    assert "predictions" not in result


def test_foreign_textzoom_checkpoint_with_config(files):
    from tsrx.registry import SR_BACKBONES

    torch.manual_seed(0)
    foreign = files["tmp"] / "textzoom_tsrn.pth"
    small = {"blocks": 1, "hidden_units": 8}  # the official layout, small enough for a test
    torch.save(
        {"state_dict_G": SR_BACKBONES.get("tsrn")(**small).state_dict(), "info": {"iters": 1}},
        foreign,
    )
    config = files["tmp"] / "tsrn_small.toml"
    config.write_text('[model]\nsr = { type = "tsrn", blocks = 1, hidden_units = 8 }\n')
    out = files["tmp"] / "foreign.json"
    # beside it, the same file without --config, which describes a default TSRN
    proc, without = _tsrx_side_by_side(
        [
            "eval",
            "--ckpt",
            foreign,
            "--config",
            config,
            "--data",
            files["data"],
            "--json",
            out,
            "--batch-size",
            6,
        ],
        ["eval", "--ckpt", foreign, "--data", files["data"]],
        cwd=files["tmp"],
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["format"] == "textzoom" and result["average"]["n"] == 18
    # without --config: the shapes say it is not a default TSRN
    assert without.returncode == 2 and "shape mismatch" in without.stderr


def test_missing_checkpoint_is_a_clear_error(files):
    proc = _tsrx(
        "eval", "--ckpt", files["tmp"] / "nope.pth", "--data", files["data"], cwd=files["tmp"]
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_protocols_on_the_evaluator_match_hand_computed_values(files):
    """textzoom: per-batch PSNR averaged over batches; per-image: per-image PSNR averaged."""
    from tsrx.checkpoint import load_checkpoint, load_into
    from tsrx.config.experiment import load_experiment
    from tsrx.data.loader import build_datasets, collate_batch
    from tsrx.engine.evaluator import evaluate_model
    from tsrx.engine.metrics import psnr_batch, psnr_per_image
    from tsrx.models.build import build_model

    ckpt = load_checkpoint(files["ckpt"])
    model = build_model(ckpt["config"], load_init=False)
    load_into(model, ckpt["model"])
    model.eval()
    _, _, test = build_datasets(ckpt["config"]["data"])
    items = [test["hard"][i] for i in range(6)]
    with torch.no_grad():
        batch = collate_batch(items)
        sr = model(batch)["sr"]
    by_batch = evaluate_model(model, {"hard": test["hard"]}, batch_size=4)
    expected = (psnr_batch(sr[:4], batch["hr"][:4]) + psnr_batch(sr[4:], batch["hr"][4:])) / 2
    assert by_batch["splits"]["hard"]["psnr"] == pytest.approx(expected.item(), rel=1e-5)
    per_image = evaluate_model(model, {"hard": test["hard"]}, protocol="per-image", batch_size=4)
    expected = psnr_per_image(sr, batch["hr"]).mean()
    assert per_image["splits"]["hard"]["psnr"] == pytest.approx(expected.item(), rel=1e-5)
    del load_experiment


def test_models_with_their_own_recognizer_judge_themselves_and_the_baselines(files):
    from tsrx.config.experiment import load_experiment
    from tsrx.data.loader import build_datasets
    from tsrx.engine.evaluator import evaluate_model
    from tsrx.models.build import build_model

    base = files["tmp"] / "tiny.toml"
    for has_sr in (True, False):  # joint model; stage 2 (recognizer only, reads HR)
        config = load_experiment(base, ['model.recognizer={type = "tiny_rec"}']).runs[0].config
        if not has_sr:
            config["model"]["sr"] = None
        net = build_model(config)
        _, _, test = build_datasets(config["data"])
        result = evaluate_model(net, test, batch_size=4, baselines=True)
        assert result["recognizer"].startswith("the model's own recognizer")
        assert result["primary_judge"] == "own" and list(result["judges"]) == ["own"]
        assert result["average"]["acc"] is not None
        assert (result["average"]["psnr"] is not None) == has_sr
        assert result["baselines"]["bicubic"]["average"]["acc"] is not None
        assert result["baselines"]["hr"]["average"]["acc"] is not None
        assert len(result["predictions"]["easy"]) == 6


def test_eval_of_a_run_checkpoint_is_cached_where_report_reads_it(files, tiny_plugin):
    """`tsrx eval --ckpt runs/<exp>/<run>/best_psnr_model.pth` then `tsrx report runs/<exp>`:
    the report shows that test result instead of the selector's validation result."""
    from test_engine_helpers import prepare

    from tsrx.checkpoint import save_checkpoint

    tmp = files["tmp"]
    run_dir = prepare(
        write_experiment(tmp / "exp", files["data"], tiny_plugin, "cached"), tmp / "runs"
    )
    ckpt = run_dir / "best_psnr_model.pth"
    save_checkpoint(ckpt, torch.load(files["ckpt"], weights_only=True))
    proc = _tsrx("eval", "--ckpt", ckpt, "--plugin", tiny_plugin, cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    cached = list((run_dir / "eval").glob("best_psnr_model-*.json"))
    assert len(cached) == 1 and "cached for tsrx report" in proc.stderr
    report = _tsrx("report", run_dir.parent, "--format", "json", cwd=tmp)
    assert report.returncode == 0, report.stderr
    row = json.loads(report.stdout)["blocks"][0]["rows"][0]
    assert row["source"] == "test" and row["from"].endswith(cached[0].name)
    assert row["values"]["A-PSNR"] == pytest.approx(
        json.loads(cached[0].read_text())["average"]["psnr"]
    )
