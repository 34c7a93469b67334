"""Values and files that cannot work are refused when the file is validated, with the file
and key named, before any run directory exists (issue 27, points 2, 9, 10 and 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tsrx.config.experiment import load_experiment
from tsrx.errors import ConfigError

BASE = """
name = "base"
[data]
root = "data/synth"
train = { type = "textzoom", roots = ["train1"] }
test.easy = { type = "textzoom", roots = ["test/easy"] }
[model]
sr = { type = "tsrn", blocks = 1, hidden_units = 4, stn = false }
[train]
steps = 2
"""


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def tsrx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**__import__("os").environ, "TSRX_THREADS": "1"},
    )


# -- point 10: values accepted that cannot work ---------------------------------------------
@pytest.mark.parametrize(
    "body,key,message",
    [
        ('[optim]\ntype = "adam"\nlr = inf\n', "optim.lr", "expected a finite number, got inf"),
        ('[optim]\ntype = "adam"\nlr = nan\n', "optim.lr", "expected a finite number, got nan"),
        (
            "[train]\nsteps = 9223372036854775807\n",
            "train.steps",
            "expected an integer in (0, 1000000000], got 9223372036854775807",
        ),
    ],
)
def test_infinite_rates_and_endless_step_counts_are_refused(tmp_path, body, key, message):
    write(tmp_path / "base.toml", BASE)
    path = write(tmp_path / "e.toml", 'extends = "base.toml"\n' + body)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert f"e.toml:{key}: {message}" in str(info.value)


@pytest.mark.parametrize(
    "body,key,message",
    [
        ('[model]\nsr = "_delete_"\n', "model", "nothing to build or train"),
        ('data = "_delete_"\n', "data.train", "no train table: nothing to train on"),
    ],
)
def test_validate_refuses_what_train_refuses_and_train_creates_no_run_dir(
    tmp_path, body, key, message
):
    write(tmp_path / "base.toml", BASE)
    write(tmp_path / "e.toml", 'extends = "base.toml"\n' + body)
    res = tsrx("config", "validate", "e.toml", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    # the file that deleted the table is named, not the base that set it
    assert f"e.toml:{key}: {message}" in res.stderr, res.stderr
    res = tsrx("train", "e.toml", "--runs-dir", "runs", cwd=tmp_path)
    assert res.returncode == 2 and f"e.toml:{key}: {message}" in res.stderr, res.stderr
    assert not (tmp_path / "runs").exists()


def test_a_config_for_eval_needs_no_train_table(tmp_path):
    path = write(tmp_path / "e.toml", '[model]\nsr = { type = "tsrn" }\n')
    assert load_experiment(path).runs[0].config["data"]["train"] is None
