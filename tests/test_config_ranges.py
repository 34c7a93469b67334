"""Ranges carried by annotations: bad values are refused at `tsrx config validate`, not hours
into a run (issue 14, point 5)."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import pytest

from tsrx.config import NonNegative, Positive, PositiveInt, Range
from tsrx.config.experiment import load_experiment
from tsrx.config.schema import Mismatch, coerce
from tsrx.errors import ConfigError
from tsrx.registry import HEADS

BAD_VALUES = [
    ("[train]\nsteps = 0\n", "train.steps", "expected an integer in (0, 1000000000], got 0"),
    ("[train]\nsteps = -5\n", "train.steps", "got -5"),
    ("[train]\nval_every = 0\n", "train.val_every", "> 0"),
    ("[train]\nckpt_every = 0\n", "train.ckpt_every", "> 0"),
    ("[train]\nbatch_size = -1\n", "train.batch_size", "> 0"),
    ("[train]\nval_batch_size = 0\n", "train.val_batch_size", "> 0"),
    ("[eval]\nbatch_size = 0\n", "eval.batch_size", "> 0"),
    ('[optim]\ntype = "adam"\nlr = -0.001\n', "optim.lr", "a number > 0, got -0.001"),
    ('[optim]\ntype = "adam"\nbetas = [0.9, 1.0]\n', "optim.betas", "in [0, 1)"),
    ("[data]\nnum_workers = -1\n", "data.num_workers", ">= 0"),
    ("[launcher]\ncpus_per_task = 0\n", "launcher.cpus_per_task", "> 0"),
    (
        '[model.recognizer]\ntype = "crnn"\n[model.head]\ntype = "mlp"\nhidden_units = 0\n',
        "model.head.hidden_units",
        "an integer > 0, got 0",
    ),
    (
        '[model.recognizer]\ntype = "crnn"\n[model.head]\ntype = "mlp"\ndropout = 1.5\n',
        "model.head.dropout",
        "in [0, 1]",
    ),
    ('[model.sr]\ntype = "tsrn"\nblocks = 0\n', "model.sr.blocks", "> 0"),
]


@pytest.mark.parametrize("body,key,message", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_out_of_range_values_are_refused_at_load(tmp_path, body, key, message):
    path = tmp_path / "e.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    text = str(info.value)
    assert f"e.toml:{key}:" in text and message in text, text


def test_config_validate_cli_names_file_table_key(tmp_path):
    (tmp_path / "e.toml").write_text("[train]\nsteps = 0\nckpt_every = 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "tsrx", "config", "validate", "e.toml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "e.toml:train.steps: expected an integer in (0, 1000000000], got 0" in out.stderr
    assert "e.toml:train.ckpt_every: expected an integer > 0, got 0" in out.stderr


def test_command_line_overrides_are_checked_too(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text("[train]\nsteps = 10\n")
    with pytest.raises(
        ConfigError,
        match=r"<command line>:train.steps: expected an integer in \(0, 1000000000\], got -5",
    ):
        load_experiment(path, ["train.steps=-5"])


def test_values_in_range_still_load(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text(
        '[train]\nsteps = 1\nval_every = 1\ngrad_clip = 0.5\n[optim]\ntype = "sgd"\n'
        "lr = 0.1\nmomentum = 0.0\n"
    )
    cfg = load_experiment(path).runs[0].config
    assert cfg["train"]["steps"] == 1 and cfg["optim"]["momentum"] == 0.0


def test_range_marks_and_overrides():
    assert coerce(3, Annotated[int, Positive]) == 3
    assert coerce(0, Annotated[int, NonNegative]) == 0
    with pytest.raises(Mismatch, match="> 0"):
        coerce(0, PositiveInt)
    with pytest.raises(Mismatch, match=r"in \(0, 1\)"):
        coerce(1.0, Annotated[float, Range(0, 1, low_open=True, high_open=True)])
    with pytest.raises(Mismatch):
        coerce(float("nan"), Annotated[float, Positive])
    assert coerce(None, Annotated[float, Positive] | None) is None


def test_a_third_party_component_gets_its_range_checked(tmp_path):
    """A plugin annotates its own option; the registry checks the range like tsrx's own."""

    def wide_head(in_features: int, num_classes: int, width: PositiveInt = 4):
        raise AssertionError("not built: the table is refused first")

    HEADS.register("test_ranged_head", wide_head)
    try:
        issues = HEADS.check({"type": "test_ranged_head", "width": -2}, "model.head", "e.toml")
        assert [str(i) for i in issues] == [
            "e.toml:model.head.width: expected an integer > 0, got -2"
        ]
    finally:
        HEADS.unregister("test_ranged_head")
