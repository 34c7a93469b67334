"""Experiment files: extends, grid, variants, overrides and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsrx.config.experiment import load_experiment, run_name
from tsrx.errors import ConfigError, TsrxError


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_extends_deep_merges_relative_to_file(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "common.toml", "seed = 3\n[train]\nsteps = 10\nbatch_size = 16\n")
    exp = write(tmp_path / "exp.toml", 'extends = ["base/common.toml"]\n[train]\nsteps = 20\n')
    (run,) = load_experiment(exp).runs
    assert run.config["train"]["steps"] == 20
    assert run.config["train"]["batch_size"] == 16
    assert run.config["seed"] == 3
    assert run.config["train"]["val_every"] == 500  # default filled in
    assert run.name == "main"


def test_extends_cycle_and_missing_file(tmp_path):
    write(tmp_path / "a.toml", 'extends = ["b.toml"]\n')
    write(tmp_path / "b.toml", 'extends = ["a.toml"]\n')
    with pytest.raises(TsrxError, match="cycle"):
        load_experiment(tmp_path / "a.toml")
    write(tmp_path / "c.toml", 'extends = ["nope.toml"]\n')
    with pytest.raises(TsrxError, match="nope.toml.*not found"):
        load_experiment(tmp_path / "c.toml")


def test_grid_is_a_cartesian_product_with_stable_names(tmp_path):
    exp = write(
        tmp_path / "g.toml",
        """
[grid]
"model.head.type" = ["dense", "mlp", "sidernn", "sidernn+mlp"]
"loss.combiner.type" = ["avg", "uncertainty"]
[model.recognizer]
type = "crnn"
[model.head]
type = "dense"
""",
    )
    runs = load_experiment(exp).runs
    assert len(runs) == 8
    names = [r.name for r in runs]
    assert len(set(names)) == 8
    assert names[1].startswith("head=dense,combiner=uncertainty-")
    assert names == [r.name for r in load_experiment(exp).runs]  # deterministic
    mlp_unc = [
        r
        for r in runs
        if r.point == {"model.head.type": "mlp", "loss.combiner.type": "uncertainty"}
    ]
    assert mlp_unc[0].config["model"]["head"]["type"] == "mlp"
    assert mlp_unc[0].config["loss"]["combiner"]["type"] == "uncertainty"


def test_variants_combine_with_grid(tmp_path):
    exp = write(
        tmp_path / "v.toml",
        """
[grid]
"train.steps" = [1, 2]
[[variants]]
name = "small"
"train.batch_size" = 8
[[variants]]
name = "big"
"train.batch_size" = 32
""",
    )
    runs = load_experiment(exp).runs
    assert len(runs) == 4
    big = [r for r in runs if r.name.startswith("big,")]
    assert {r.config["train"]["batch_size"] for r in big} == {32}


def test_every_problem_is_reported_at_once_with_file_and_key(tmp_path):
    write(tmp_path / "base.toml", "[train]\nsteps = 'many'\n")
    exp = write(
        tmp_path / "exp.toml",
        """
extends = ["base.toml"]
traning = 1
[train]
bach_size = 4
precision = "bf17"
[grid]
"train.nope" = [1]
"train.log_every" = []
""",
    )
    with pytest.raises(ConfigError) as exc:
        load_experiment(exp)
    text = str(exc.value)
    assert "base.toml:train.steps: expected an integer, got 'many'" in text
    assert "exp.toml:train.bach_size: unknown key (did you mean 'batch_size'" in text
    assert "allowed keys: batch_size, callbacks," in text
    assert "exp.toml:traning: unknown table or key (did you mean 'train'?)" in text
    assert "'bf16'" in text and "train.precision" in text
    assert "grid.train.nope: names nothing" in text
    assert "grid.train.log_every: is an empty list" in text
    assert len(exc.value.issues) == 6


def test_renamed_key_is_refused_with_its_new_name_never_reinterpreted(tmp_path):
    # train.amp = "none" | "bf16" | "fp16" became train.precision = "fp32" | "bf16" | "fp16"
    exp = write(tmp_path / "e.toml", '[train]\namp = "bf16"\n')
    with pytest.raises(ConfigError) as exc:
        load_experiment(exp)
    assert 'e.toml:train.amp: renamed train.precision (values "fp32", "bf16"' in str(exc.value)
    plain = write(tmp_path / "plain.toml", "[train]\nsteps = 5\n")
    with pytest.raises(ConfigError, match="train.amp: renamed train.precision"):
        load_experiment(plain, ["train.amp=bf16"])
    (run,) = load_experiment(plain, ["eval.precision=bf16"]).runs
    assert run.config["train"]["precision"] == "fp32"  # the default: exact
    assert run.config["eval"]["precision"] == "bf16"


def test_set_overrides_are_typed_by_schema(tmp_path):
    exp = write(tmp_path / "e.toml", "[train]\nsteps = 5\n")
    (run,) = load_experiment(
        exp,
        ["train.steps=7", "train.grad_clip=1", "train.precision=bf16", "data.root=/data/TextZoom"],
    ).runs
    assert run.config["train"]["steps"] == 7
    assert run.config["train"]["grad_clip"] == 1.0 and isinstance(
        run.config["train"]["grad_clip"], float
    )
    assert run.config["train"]["precision"] == "bf16"
    assert run.config["data"]["root"] == "/data/TextZoom"
    with pytest.raises(ConfigError) as exc:
        load_experiment(exp, ["train.steps=abc", "trian.steps=1"])
    text = str(exc.value)
    assert "<command line>:train.steps: expected an integer" in text
    assert "names nothing" in text and "did you mean 'train'" in text


def test_malformed_toml_names_line_and_column(tmp_path):
    exp = write(tmp_path / "bad.toml", "[train]\nsteps = 5\nbatch_size = = 3\n")
    with pytest.raises(TsrxError, match=r"bad.toml:3:\d+: malformed TOML"):
        load_experiment(exp)


def test_component_arguments_checked_against_signature(tmp_path):
    exp = write(
        tmp_path / "e.toml",
        '[optim]\ntype = "adam"\nlr = 0.1\nbetas = [0.9, 0.99]\nmomentum = 0.9\n',
    )
    with pytest.raises(ConfigError) as exc:
        load_experiment(exp)
    assert "optim.momentum: unknown key" in str(exc.value)
    exp = write(tmp_path / "e.toml", '[optim]\ntype = "adma"\n')
    with pytest.raises(ConfigError, match="unknown optimizer 'adma' \\(did you mean 'adam'"):
        load_experiment(exp)


def test_run_name_is_readable_and_hash_depends_on_point():
    a = run_name({"model.head.type": "mlp", "loss.combiner.type": "uncertainty"}, None)
    b = run_name({"model.head.type": "mlp", "loss.combiner.type": "avg"}, None)
    assert a.startswith("head=mlp,combiner=uncertainty-") and len(a.split("-")[-1]) == 8
    assert a.split("-")[-1] != b.split("-")[-1]


def test_set_into_component_tables_is_typed_by_the_signature(tmp_path):
    exp = write(tmp_path / "e.toml", '[model.sr]\ntype = "tsrn"\n')
    (run,) = load_experiment(
        exp,
        [
            "model.sr.hidden_units=8",
            "optim.lr=0.01",
            'optim.type="sgd"',
            'eval.judge_weights="/w/crnn.pth"',
            "data.root=/data/TZ",
            "sched={type = 'cosine', warmup_steps = 10}",
        ],
    ).runs
    cfg = run.config
    assert cfg["model"]["sr"]["hidden_units"] == 8
    assert cfg["optim"]["type"] == "sgd" and cfg["optim"]["lr"] == 0.01
    assert isinstance(cfg["optim"]["lr"], float)
    assert cfg["eval"]["judge_weights"] == "/w/crnn.pth"
    assert cfg["data"]["root"] == "/data/TZ"
    assert cfg["sched"]["type"] == "cosine" and cfg["sched"]["warmup_steps"] == 10
    import tomllib

    from tsrx.config.toml_write import dumps

    assert tomllib.loads(dumps(cfg))["model"]["sr"]["hidden_units"] == 8
    with pytest.raises(ConfigError, match="model.sr.hidden_units: expected an integer"):
        load_experiment(exp, ["model.sr.hidden_units=many"])


def test_extends_changing_a_component_type_starts_its_table_afresh(tmp_path):
    write(tmp_path / "base.toml", '[model]\nsr = { type = "tsrn", blocks = 1, stn = false }\n')
    exp = write(
        tmp_path / "exp.toml", 'extends = ["base.toml"]\n[model]\nsr = { type = "bicubic" }\n'
    )
    (run,) = load_experiment(exp).runs
    assert run.config["model"]["sr"] == {
        "type": "bicubic",
        "mask": True,
        "scale": 2,
        "align_corners": False,
    }
    # the same type merges key by key as before
    write(
        tmp_path / "same.toml",
        'extends = ["base.toml"]\n[model]\nsr = { type = "tsrn", blocks = 2 }\n',
    )
    (run,) = load_experiment(tmp_path / "same.toml").runs
    assert (run.config["model"]["sr"]["blocks"], run.config["model"]["sr"]["stn"]) == (2, False)


def test_extends_replace_and_delete_markers(tmp_path):
    write(
        tmp_path / "base.toml",
        """
[model]
sr = { type = "tsrn", blocks = 1, stn = false }
init = { sr = "sr.pth", recognizer = "weights/crnn.pth" }
[train]
steps = 7
batch_size = 4
[grid]
"train.lr_unused" = [1]
[grid.model.sr]
blocks = [1, 2]
hidden_units = [8, 16]
""".replace('"train.lr_unused" = [1]\n', ""),
    )
    exp = write(
        tmp_path / "exp.toml",
        """
extends = ["base.toml"]
[model.sr]
"_replace_" = true
type = "tsrn"
hidden_units = 8
[model.init]
recognizer = "_delete_"
[train]
batch_size = "_delete_"
[grid]
"model.sr.blocks" = "_delete_"
""",
    )
    runs = load_experiment(exp).runs
    assert [r.point for r in runs] == [{"model.sr.hidden_units": 8}, {"model.sr.hidden_units": 16}]
    cfg = runs[0].config
    assert cfg["model"]["sr"]["blocks"] == 5 and cfg["model"]["sr"]["stn"] is True  # defaults
    assert cfg["model"]["init"] == {"sr": "sr.pth"}
    assert cfg["train"]["steps"] == 7 and cfg["train"]["batch_size"] == 64  # back to default
    # a whole table, and a grid axis written as a sub-table by the child
    write(
        tmp_path / "drop.toml",
        'extends = ["base.toml"]\n[model]\ninit = "_delete_"\n'
        '[grid.model.sr]\nhidden_units = "_delete_"\n',
    )
    runs = load_experiment(tmp_path / "drop.toml").runs
    assert [r.point for r in runs] == [{"model.sr.blocks": 1}, {"model.sr.blocks": 2}]
    assert runs[0].config["model"]["init"] == {}


def test_replace_marker_must_be_true(tmp_path):
    exp = write(tmp_path / "exp.toml", '[model.sr]\n"_replace_" = 1\ntype = "bicubic"\n')
    with pytest.raises(ConfigError, match=r"exp.toml:model.sr._replace_: expected true"):
        load_experiment(exp)


def test_empty_init_path_is_an_error_at_validation(tmp_path):
    exp = write(
        tmp_path / "exp.toml",
        '[model]\nsr = { type = "bicubic" }\n'
        'init = { sr = "", recognizer = "crnn.pth" }\n'
        '[eval]\njudge_weights = " "\n',
    )
    with pytest.raises(ConfigError) as err:
        load_experiment(exp)
    text = str(err.value)
    assert "exp.toml:model.init: key 'sr': expected a non-empty path, got ''" in text
    assert "exp.toml:eval.judge_weights: expected a non-empty path, got ' '" in text
    assert "init.recognizer" not in text


def test_extends_replaces_or_deletes_a_whole_grid(tmp_path):
    write(tmp_path / "base.toml", '[grid]\n"train.steps" = [1, 2]\n"train.batch_size" = [4, 8]\n')
    write(
        tmp_path / "one.toml",
        'extends = ["base.toml"]\n[grid]\n"_replace_" = true\n'
        '"train.lr_warmup_unused" = "_delete_"\n"train.steps" = [3]\n',
    )
    assert [r.point for r in load_experiment(tmp_path / "one.toml").runs] == [{"train.steps": 3}]
    write(tmp_path / "none.toml", 'extends = ["base.toml"]\ngrid = "_delete_"\n')
    assert [r.name for r in load_experiment(tmp_path / "none.toml").runs] == ["main"]


def test_a_long_grid_point_still_names_a_directory_the_file_system_takes(tmp_path):
    # five long values and a long variant name: ~560 bytes of readable name, over the 255 a
    # directory name may have; cut, with the digest of the whole point keeping runs apart
    lrs = ", ".join(f"0.000{i}2345678901234567" for i in range(3))
    exp = write(
        tmp_path / "long.toml",
        f"""
[grid]
"optim.lr" = [{lrs}]
"optim.weight_decay" = [0.000012345678901234, 0.000022345678901234]
"train.val_every" = [1234567, 1234568]
[[variants]]
name = "{"a_rather_descriptive_variant_name_" * 6}"
"train.batch_size" = 8
""",
    )
    runs = load_experiment(exp).runs
    names = [r.name for r in runs]
    assert len(runs) == 12 and len(set(names)) == 12
    for name in names:
        assert len(name.encode()) <= 255 and "..." in name, name
        (tmp_path / "runs" / name).mkdir(parents=True)  # the file system takes it
    assert names == [r.name for r in load_experiment(exp).runs]  # still deterministic
    # a short point keeps its whole readable name
    assert run_name({"train.steps": 2}, "small").startswith("small,steps=2-")


def test_a_variant_name_longer_than_a_directory_name_is_refused(tmp_path):
    exp = write(tmp_path / "v.toml", f'[[variants]]\nname = "{"v" * 300}"\n')
    with pytest.raises(ConfigError, match="is 300 bytes long, a directory name at most 255"):
        load_experiment(exp)


def test_a_grid_value_listed_twice_is_refused_naming_the_axis(tmp_path):
    # two equal points would be one run name, one directory: the second would resume the first
    exp = write(tmp_path / "g.toml", '[grid]\n"train.steps" = [1, 2, 1]\n"optim.lr" = [0.1]\n')
    with pytest.raises(ConfigError, match=r"grid\.train\.steps: lists 1 twice"):
        load_experiment(exp)
