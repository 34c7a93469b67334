"""Values and files that cannot work are refused when the file is validated, with the file
and key named, before any run directory exists (issue 27, points 2, 9, 10 and 11)."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from side_by_side import side_by_side

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
    res, train = side_by_side(
        partial(tsrx, "config", "validate", "e.toml", cwd=tmp_path),
        partial(tsrx, "train", "e.toml", "--runs-dir", "runs", cwd=tmp_path),
    )
    assert res.returncode == 2, res.stdout + res.stderr
    # the file that deleted the table is named, not the base that set it
    assert f"e.toml:{key}: {message}" in res.stderr, res.stderr
    assert train.returncode == 2 and f"e.toml:{key}: {message}" in train.stderr, train.stderr
    assert not (tmp_path / "runs").exists()


def test_a_config_for_eval_needs_no_train_table(tmp_path):
    path = write(tmp_path / "e.toml", '[model]\nsr = { type = "tsrn" }\n')
    assert load_experiment(path).runs[0].config["data"]["train"] is None


# -- point 2: run names that would leave --runs-dir ------------------------------------------
@pytest.mark.parametrize("name", ["../../../X", "../X", "ABSOLUTE", "a/b", "..", "a\\b"])
def test_variant_names_that_leave_runs_dir_are_refused(tmp_path, name):
    if name == "ABSOLUTE":
        name = str(tmp_path / "outside")
    write(tmp_path / "base.toml", BASE)
    quoted = name.replace("\\", "\\\\")
    write(
        tmp_path / "e.toml",
        f'extends = "base.toml"\n[[variants]]\nname = "ok"\n[[variants]]\nname = "{quoted}"\n',
    )
    (tmp_path / "work" / "runs").mkdir(parents=True)
    res = tsrx("train", "../e.toml", "--runs-dir", "runs", cwd=tmp_path / "work")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"e.toml:variants[1].name: variant name {name!r}" in res.stderr, res.stderr
    assert "directory under --runs-dir" in res.stderr
    # nothing created anywhere: not the good variant either (every problem before any run)
    assert list((tmp_path / "work" / "runs").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.toml", "e.toml", "work"]


def test_an_experiment_name_that_leaves_runs_dir_is_refused(tmp_path):
    write(tmp_path / "base.toml", BASE)
    path = write(tmp_path / "e.toml", 'extends = "base.toml"\nname = "../escaped"\n')
    with pytest.raises(ConfigError, match=r"e.toml:name: experiment name '../escaped'"):
        load_experiment(path)


# -- point 9: grid size counted before expanding -----------------------------------------------
def test_a_huge_grid_is_refused_with_its_count_without_expanding(tmp_path, monkeypatch):
    import itertools

    from tsrx.config import experiment

    axes = "".join(
        f'"{k}" = [{", ".join(str(i + 1) for i in range(10))}]\n'
        for k in ("train.steps", "train.batch_size", "seed", "train.val_every", "train.log_every")
    )
    path = write(tmp_path / "e.toml", BASE + '[optim]\ntype = "adam"\n[grid]\n' + axes)
    path.write_text(
        path.read_text() + '"optim.lr" = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]\n'
    )

    def no_product(*args, **kwargs):
        raise AssertionError("the grid was expanded")

    monkeypatch.setattr(itertools, "product", no_product)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    text = str(info.value)
    assert "e.toml:grid: 1,000,000 runs (1 variant(s) x 10 x 10 x 10 x 10 x 10 x 10)" in text
    assert f"more than the limit of {experiment.MAX_RUNS:,} runs" in text


def test_variants_multiply_the_count_and_the_limit_itself_is_allowed(tmp_path):
    from tsrx.config.experiment import MAX_RUNS

    assert MAX_RUNS == 1000  # documented in docs/guarantees.md
    variants = "".join(f'[[variants]]\nname = "v{i}"\n' for i in range(2))
    values = ", ".join(str(i + 1) for i in range(10))
    grid = f'[grid]\n"train.steps" = [{values}]\n"seed" = [{values}]\n'
    ok = write(tmp_path / "ok.toml", BASE + grid + variants)
    assert len(load_experiment(ok).runs) == 200
    big = write(
        tmp_path / "big.toml", BASE + grid + '"train.log_every" = [' + values + "]\n" + variants
    )
    with pytest.raises(ConfigError, match=r"2,000 runs \(2 variant\(s\) x 10 x 10 x 10\)"):
        load_experiment(big)


# -- point 11: "_replace_" at a file's top level ---------------------------------------------
def test_replace_at_a_files_top_level_is_an_error_naming_the_file(tmp_path):
    write(tmp_path / "base.toml", BASE)
    path = write(tmp_path / "e.toml", '"_replace_" = true\nextends = "base.toml"\n')
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert "e.toml:_replace_: has no meaning at a file's top level" in str(info.value)


# -- issue 26: [[variants]] in a file that extends another ------------------------------------
def test_variants_of_a_file_replace_its_bases_and_grid_axes_merge(tmp_path):
    write(
        tmp_path / "base.toml",
        BASE + '[grid]\n"seed" = [0, 1]\n[[variants]]\nname = "a"\n[[variants]]\nname = "b"\n',
    )
    child = write(
        tmp_path / "child.toml",
        'extends = "base.toml"\n[grid]\n"train.steps" = [3, 4]\n[[variants]]\nname = "c"\n',
    )
    runs = load_experiment(child).runs
    assert {r.name.split(",")[0] for r in runs} == {"c"} and len(runs) == 4
    inherit = write(tmp_path / "inherit.toml", 'extends = "base.toml"\n[train]\nsteps = 5\n')
    assert {r.name.split(",")[0] for r in load_experiment(inherit).runs} == {"a", "b"}
    none = write(tmp_path / "none.toml", 'extends = "base.toml"\nvariants = "_delete_"\n')
    assert [r.point for r in load_experiment(none).runs] == [{"seed": 0}, {"seed": 1}]


def test_shipped_tpgsr_variant_trains_no_loss_without_effect():
    from tsrx.config.experiment import load_experiment
    from tsrx.engine.build import build_losses, model_tasks
    from tsrx.models.build import build_model

    path = Path(__file__).resolve().parent.parent / "experiments" / "text_prior.toml"
    for run in load_experiment(path).runs:
        cfg = run.config
        cfg["model"]["prior_weights"] = None  # the published file is not needed for the tasks
        model = build_model(cfg, load_init=False)
        tasks = model_tasks(model)
        _, _, warnings = build_losses(cfg["loss"], tasks, model, cfg["data"])
        assert not warnings, (run.name, warnings)
        assert ("consistency" in tasks) == run.name.startswith("tatt")


# -- issue 26: a range used as an annotation fails at registration ---------------------------
@pytest.mark.parametrize("marker", ["Positive", "NonNegative"])
def test_a_range_used_as_a_type_is_refused_when_the_component_registers(marker):
    from tsrx import config as tsrx_config
    from tsrx.errors import TsrxError
    from tsrx.registry import HEADS

    # as a plugin module writes it: `from tsrx.config import Positive` at its top
    namespace = {marker: getattr(tsrx_config, marker)}
    exec(
        f"def head(in_features: int, num_classes: int, scale: {marker} = 2.0):\n"
        "    raise AssertionError('never built')\n",
        namespace,
    )
    head = namespace["head"]

    with pytest.raises(TsrxError) as info:
        HEADS.register("range_as_type", head)
    text = str(info.value)
    assert "option 'scale' is annotated with a Range" in text
    assert f"Write Annotated[float, {marker}]" in text
    assert "range_as_type" not in HEADS.names()
