"""NaN results (issue 14, point 7): a loud warning, standard JSON (null), and selectors and
reports treat a NaN result as no result."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import torch
from test_engine_helpers import tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx.launch.status import latest_metrics
from tsrx.registry import SELECTORS


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_eval_of_nan_weights_warns_and_writes_standard_json(tmp_path, tiny_data, tiny_plugin):
    from tsrx.checkpoint import make_checkpoint, save_checkpoint
    from tsrx.config.experiment import load_experiment
    from tsrx.models.build import build_model

    config = load_experiment(write_experiment(tmp_path, tiny_data, tiny_plugin)).runs[0].config
    model = build_model(config)
    state = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    ckpt = save_checkpoint(tmp_path / "nan.pth", make_checkpoint(state, config=config))
    out_json = tmp_path / "r.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsrx",
            "eval",
            "--ckpt",
            str(ckpt),
            "--plugin",
            str(tiny_plugin),
            "--data",
            str(tiny_data),
            "--json",
            str(out_json),
            "--batch-size",
            "6",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "WARNING: non-finite metric values (easy.psnr" in out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("│")]
    assert rows and not any("nan" in r.lower() for r in rows), out.stdout  # "-", not nan
    result = strict_json(out_json.read_text())  # before: bare NaN, refused by strict readers
    assert result["average"]["psnr"] is None and "average.psnr" in result["nonfinite"]
    assert SELECTORS.build({"type": "best_psnr"}).score(result) == -math.inf


def test_status_and_selectors_ignore_nan_in_older_files(tmp_path):
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(
            '{"kind": "val", "step": 5, "result": {"average": {"acc": NaN, "psnr": 20.5, "ssim": NaN}}}\n'
        )
    metrics, step = latest_metrics(tmp_path)
    assert metrics == {"psnr": 20.5, "val_step": 5} and step == 5
    sel = SELECTORS.build({"type": "best", "metric": "ssim"})
    assert sel.score({"average": {"ssim": float("nan")}}) == -math.inf
