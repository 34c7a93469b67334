"""Shared set-up for the engine tests: tiny registered components, tiny data, run helpers.

The tiny components live in a plugin *file* that experiments name (``plugins = [...]``),
so processes spawned for DDP load them exactly as a user's plugin would be loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

PLUGIN = '''
"""Tiny components for the engine tests: fast, deterministic, no BatchNorm."""
import os

import torch
import torch.nn.functional as F
from torch import nn

from tsrx.engine.signals import request_stop
from tsrx.models.text import ctc_greedy_decode
from tsrx.registry import RECOGNIZERS, SR_BACKBONES, SR_LOSSES


@SR_BACKBONES.register("tiny_sr")
class TinySR(nn.Module):
    def __init__(self, mask: bool = True, hidden_units: int = 8, dropout: float = 0.0):
        super().__init__()
        self.in_channels = 4 if mask else 3
        self.body = nn.Sequential(
            nn.Conv2d(self.in_channels, hidden_units, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_units, 4 * self.in_channels, 3, padding=1), nn.PixelShuffle(2))
        self.drop = nn.Dropout(dropout)
        self.calls = 0

    def forward(self, lr):
        if self.training:
            self.calls += 1
            stop_at = int(os.environ.get("TINY_STOP_AT", "0"))
            if stop_at and self.calls == stop_at:
                request_stop("test: TINY_STOP_AT")
        up = F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
        return up + self.body(self.drop(lr))


@RECOGNIZERS.register("tiny_rec")
class TinyRec(nn.Module):
    def __init__(self, alphabet: str = "0123456789abcdefghijklmnopqrstuvwxyz",
                 hidden_units: int = 16):
        super().__init__()
        self.alphabet = alphabet
        self.num_classes = len(alphabet) + 1
        self.feature_dim = hidden_units
        self.conv = nn.Conv2d(3, hidden_units, 3, padding=1)
        self.fc = nn.Linear(hidden_units, self.num_classes)

    @property
    def classifier(self):
        return self.fc

    def encode(self, images):
        x = F.interpolate(images[:, :3], (8, 32), mode="bilinear", align_corners=False)
        return torch.relu(self.conv(x)).mean(2).permute(2, 0, 1)

    def forward(self, images):
        return self.classifier(self.encode(images))

    def decode(self, logits):
        return ctc_greedy_decode(logits, self.alphabet)


@SR_LOSSES.register("tiny_nan")
class NanAt(nn.Module):
    """MSE, except NaN on the ``at``-th call in training mode (the contract check's dry
    call runs in eval mode)."""

    def __init__(self, at: int = 2):
        super().__init__()
        self.at = at
        self.calls = 0

    def forward(self, sr, hr):
        self.calls += self.training
        loss = F.mse_loss(sr, hr)
        return loss * float("nan") if self.calls == self.at else loss
'''

BASE = """
name = "{name}"
seed = 3
plugins = ["{plugin}"]

[data]
root = "{root}"
train = {{ type = "textzoom", roots = ["train1"] }}
test.easy = {{ type = "textzoom", roots = ["test/easy"] }}
test.medium = {{ type = "textzoom", roots = ["test/medium"] }}
test.hard = {{ type = "textzoom", roots = ["test/hard"] }}
num_workers = 0

[model]
sr = {{ type = "tiny_sr" }}

[train]
steps = 8
batch_size = 8
val_every = 4
ckpt_every = 4
log_every = 1
val_batch_size = 4
selectors = ["best_psnr"]

[eval]
batch_size = 4
"""


# Test modules import these fixtures, and pytest then makes one instance per module; the
# cache keeps one per process (a second plugin file would register "tiny_sr" twice).
_made: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A TextZoom-format data set: 40 training pairs, 6 per test split."""
    if "data" not in _made:
        from tsrx.data.synth import synthesize

        root = tmp_path_factory.mktemp("engine_data") / "synth"
        synthesize(root, train=40, test=[6, 6, 6], seed=0)
        _made["data"] = root
    return _made["data"]


@pytest.fixture(scope="session")
def tiny_plugin(tmp_path_factory) -> Path:
    if "plugin" not in _made:
        path = tmp_path_factory.mktemp("engine_plugin") / "tiny_engine_plugin.py"
        path.write_text(PLUGIN)
        _made["plugin"] = path
    return _made["plugin"]


def write_experiment(
    folder: Path, data: Path, plugin: Path, name: str = "tiny", extra: str = ""
) -> Path:
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / f"{name}.toml"
    path.write_text(BASE.format(name=name, plugin=plugin, root=data) + extra)
    return path


def prepare(experiment: Path, runs_dir: Path, overrides: list[str] | None = None) -> Path:
    """The run directory of the experiment's only run, as `tsrx train` makes it."""
    from tsrx.config.experiment import load_experiment
    from tsrx.launch.rundir import prepare_run_dir

    exp = load_experiment(experiment, overrides or [])
    assert len(exp.runs) == 1
    return prepare_run_dir(exp.runs[0], runs_dir, command=["test"])


def metrics(run_dir: Path, kind: str) -> list[dict]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if x["kind"] == kind]


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def test_base_experiment_is_valid(tmp_path, tiny_data, tiny_plugin):
    from tsrx.config.experiment import load_experiment

    exp = load_experiment(write_experiment(tmp_path, tiny_data, tiny_plugin))
    assert exp.runs[0].config["train"]["batch_size"] == 8
    assert exp.runs[0].config["model"]["sr"]["type"] == "tiny_sr"
