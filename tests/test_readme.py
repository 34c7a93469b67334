"""Every TOML and Python snippet of the README is checked, so the README cannot drift.

The 'Writing a plugin' files (first line ``# path``) are installed and run by
tests/test_plugins.py; the 'Experiment files' examples are validated here against copies
of experiments/, the way a user would save them next to those files.
"""

from __future__ import annotations

import ast
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
    # files of the plugin example (tested by test_plugins.py) and the two examples below
    assert sum(map(is_file_block, toml)) == 2 and len(toml) == 4, "a new TOML block needs a test"
    assert all(map(is_file_block, python)) and len(python) == 1
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
