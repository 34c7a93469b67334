"""Every TOML and Python snippet of the README is checked, so the README cannot drift.

The 'Writing a plugin' files (first line ``# path``) are installed and run by
tests/test_plugins.py; the 'Experiment files' examples are validated here against copies
of experiments/, the way a user would save them next to those files.
"""

from __future__ import annotations

import ast
import json
import math
import re
import shutil
import sys
from pathlib import Path

from tsrx.config.experiment import load_experiment
from tsrx.config.load import tomllib

REPO = Path(__file__).resolve().parents[1]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def is_file_block(body: str) -> bool:
    return re.match(r"# \S+\.(py|toml)\n", body) is not None


def test_every_snippet_is_accounted_for():
    toml, python = blocks("toml"), blocks("python")
    # files of the plugin examples (tested by test_plugins.py and below) and the two examples
    # of 'Experiment files'
    assert sum(map(is_file_block, toml)) == 3 and len(toml) == 5, "a new TOML block needs a test"
    # the plugin files, and the load_model snippet (run by the test below)
    assert sum(map(is_file_block, python)) == 2 and len(python) == 3
    for body in toml:
        tomllib.loads(body)
    for body in python:
        ast.parse(body)


def test_experiment_files_examples_validate(tmp_path, monkeypatch):
    examples = [b for b in blocks("toml") if not is_file_block(b)]
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    # the plugins the first example names: a module on sys.path and a file beside it
    (tmp_path / "my_lab").mkdir()
    (tmp_path / "my_lab" / "__init__.py").write_text("")
    (tmp_path / "my_lab" / "heads.py").write_text("")
    (tmp_path / "experiments" / "my_head.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        grid = tmp_path / "experiments" / "readme_grid.toml"
        grid.write_text(examples[0])
        runs = load_experiment(grid).runs
        assert len(runs) == 8
        assert {r.config["model"]["head"]["type"] for r in runs} == {
            "dense",
            "mlp",
            "sidernn",
            "sidernn+mlp",
        }
        # each joint run loads the stage-2 head of its type (needs): one upstream run per point
        assert all(r.upstream for r in runs)

        replace = tmp_path / "experiments" / "readme_extends.toml"
        replace.write_text(examples[1])
        (run,) = load_experiment(replace).runs
        assert run.config["model"]["sr"] == {
            "type": "bicubic",
            "mask": False,
            "scale": 2,
            "align_corners": False,
        }
        assert run.config["model"]["init"] == {}
        assert run.config["train"]["steps"] == 100 and run.config["train"]["val_every"] == 500
        base = load_experiment(tmp_path / "experiments" / "joint_image.toml").runs[0]
        assert base.config["model"]["init"] and base.config["train"]["val_every"] == 1000
    finally:
        sys.modules.pop("my_lab.heads", None)
        sys.modules.pop("my_lab", None)


def sr_backbone_example(folder: Path) -> Path:
    """The README's SR backbone files, written as a user saves them; returns the experiment."""
    files = {}
    for body in blocks("python") + blocks("toml"):
        first, _, rest = body.partition("\n")
        if first.startswith("# experiments/my_sr."):
            files[first[2:]] = rest
    assert set(files) == {"experiments/my_sr.py", "experiments/my_sr.toml"}
    for name, body in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body)
    return folder / "experiments" / "my_sr.toml"


def test_sr_backbone_example_trains_with_and_without_the_mask(tmp_path):
    """The README's backbone, loaded through its experiment's plugins = [...], passes the
    contract with 4 (mask) and 3 channels, is refused when its channels contradict
    data.mask, and trains a few steps on synthetic data, saving its weights under sr.*."""
    import pytest
    import torch

    from tsrx.data.synth import synthesize
    from tsrx.engine.run import run_training
    from tsrx.errors import TsrxError
    from tsrx.launch.rundir import prepare_run_dir
    from tsrx.registry import SR_BACKBONES

    experiment = sr_backbone_example(tmp_path)
    synthesize(tmp_path / "synth", train=24, test=[4, 4, 4], seed=0)
    common = [
        f"data.root={tmp_path / 'synth'}",
        'data.train={type = "textzoom", roots = ["train1"]}',
        'data.test.easy={type = "textzoom", roots = ["test/easy"]}',
        "data.num_workers=0",
        "train.steps=6",
        "train.batch_size=8",
        "train.val_every=6",
        "train.log_every=1",
        "train.val_batch_size=4",
        'train.selectors=["best_psnr"]',
        "eval.batch_size=4",
    ]
    try:
        for mask in (True, False):
            sets = [*common, f"data.mask={str(mask).lower()}", f"model.sr.mask={str(mask).lower()}"]
            (run,) = load_experiment(experiment, sets).runs
            assert run.config["model"]["sr"] == {
                "type": "residual_shuffle",
                "mask": mask,
                "hidden_channels": 16,
                "layers": 3,
            }
            sr = SR_BACKBONES.build(run.config["model"]["sr"], "model.sr")  # + contract check
            lr = torch.rand(2, 4 if mask else 3, 16, 64)
            assert tuple(sr(lr).shape) == (2, 4 if mask else 3, 32, 128)
            run_dir = prepare_run_dir(run, tmp_path / f"runs_{mask}", command=["test"])
            assert run_training(run_dir, device="cpu")["state"] == "completed"
            lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            losses = [x["loss"] for x in lines if x["kind"] == "train"]
            assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
            saved = torch.load(run_dir / "last.pth", weights_only=True)["model"]
            fresh = {f"sr.{k}": v for k, v in sr.state_dict().items()}
            assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in fresh.items()}

        (run,) = load_experiment(
            experiment, [*common, "data.mask=true", "model.sr.mask=false"]
        ).runs
        run_dir = prepare_run_dir(run, tmp_path / "runs_mismatch", command=["test"])
        with pytest.raises(TsrxError, match="model.sr.mask = true or data.mask = false"):
            run_training(run_dir, device="cpu")
    finally:
        SR_BACKBONES.unregister("residual_shuffle")


def test_load_model_snippet_runs_on_your_own_crops(tmp_path, monkeypatch):
    """The README's `tsrx.load_model` + `tsrx.prepare_lr` snippet, on a checkpoint at the path it
    names (an official TextZoom TSRN file there) and two crops of other sizes."""
    import numpy as np
    import torch
    from PIL import Image

    from tsrx.models.build import build_parts

    (snippet,) = [b for b in blocks("python") if not is_file_block(b)]
    path = re.search(r'load_model\("([^"]+)"\)', snippet).group(1)
    (tmp_path / path).parent.mkdir(parents=True)
    tsrn = build_parts({"sr": {"type": "tsrn"}})["sr"]
    torch.save({"state_dict_G": tsrn.state_dict(), "info": {"arch": "tsrn"}}, tmp_path / path)
    Image.fromarray(np.full((40, 90, 3), 90, np.uint8)).save(tmp_path / "crop1.png")
    Image.fromarray(np.full((25, 50, 3), 180, np.uint8)).save(tmp_path / "crop2.jpg")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["x"].shape == (2, 4, 16, 64) and scope["y"].shape == (2, 3, 32, 128)
