"""Tiny real models and data for the picture and `tsrx sr` tests: the bicubic SR plugin and an
untrained, narrow CRNN, saved as a tsrx checkpoint with its resolved config; a synthetic
TextZoom-format data set with 3 images per test split."""

from __future__ import annotations

from pathlib import Path

import pytest

EXPERIMENT = """\
name = "viz"
[data]
root = "{root}"
test.easy = {{ type = "textzoom", roots = ["test/easy"] }}
test.medium = {{ type = "textzoom", roots = ["test/medium"] }}
test.hard = {{ type = "textzoom", roots = ["test/hard"] }}
num_workers = 0
[model]
sr = {{ type = "bicubic" }}
{recognizer}
"""


def make_checkpoint(folder: Path, data_root: Path, recognizer: bool = True) -> Path:
    from tsrx.checkpoint import make_checkpoint as make
    from tsrx.checkpoint import save_checkpoint
    from tsrx.config.experiment import load_experiment
    from tsrx.models.build import build_model

    toml = folder / "viz.toml"
    rec = 'recognizer = { type = "crnn", hidden_units = 8 }' if recognizer else ""
    toml.write_text(EXPERIMENT.format(root=data_root, recognizer=rec))
    cfg = load_experiment(toml).runs[0].config
    model = build_model(cfg)
    path = folder / ("joint.pth" if recognizer else "sr.pth")
    save_checkpoint(path, make(model.state_dict(), config=cfg))
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from tsrx.data.synth import synthesize

    root = tmp_path_factory.mktemp("data") / "synth"
    synthesize(root, train=0, test=[3, 3, 3], seed=0, fonts="builtin")
    return root


@pytest.fixture(scope="session")
def joint_ckpt(tmp_path_factory, synth_root) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), synth_root)


@pytest.fixture(scope="session")
def sr_only_ckpt(tmp_path_factory, synth_root) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt_sr"), synth_root, recognizer=False)
