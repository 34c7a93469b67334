"""Run directories: resume with the same config, refuse a different one, --force, --new."""

from __future__ import annotations

import json

import pytest

from tsrx.config.experiment import RunSpec
from tsrx.errors import TsrxError
from tsrx.launch.rundir import prepare_run_dir, record_job
from tsrx.runfiles import read_meta


def spec(steps=10, lr=1e-3, name="head=mlp-abcd1234"):
    cfg = {
        "name": "exp",
        "train": {"steps": steps, "batch_size": 4},
        "optim": {"type": "adam", "lr": lr},
    }
    return RunSpec("exp", name, {"model.head.type": "mlp"}, cfg)


def test_new_run_dir_has_config_and_meta(tmp_path):
    d = prepare_run_dir(spec(), tmp_path / "runs", command=["tsrx", "submit", "x.toml"])
    assert d == tmp_path / "runs" / "exp" / "head=mlp-abcd1234"
    assert "steps = 10" in (d / "config.toml").read_text()
    meta = json.loads((d / "meta.json").read_text())
    assert meta["experiment"] == "exp" and meta["run"] == "head=mlp-abcd1234"
    assert meta["point"] == {"model.head.type": "mlp"}
    assert meta["command"] == ["tsrx", "submit", "x.toml"]
    assert meta["versions"]["tsrx"] and "plugin_packages" in meta["versions"]
    assert "commit" in meta["git"] and meta["jobs"] == []


def test_same_config_resumes_and_keeps_outputs(tmp_path):
    d = prepare_run_dir(spec(), tmp_path)
    (d / "last.pth").write_bytes(b"ckpt")
    record_job(d, "17_0", "slurm")
    again = prepare_run_dir(spec(), tmp_path)
    assert again == d and (d / "last.pth").read_bytes() == b"ckpt"
    assert [j["job_id"] for j in read_meta(d)["jobs"]] == ["17_0"]


def test_different_config_is_refused_naming_keys(tmp_path):
    d = prepare_run_dir(spec(), tmp_path)
    with pytest.raises(TsrxError) as exc:
        prepare_run_dir(spec(steps=20, lr=0.01), tmp_path)
    msg = str(exc.value)
    assert str(d / "config.toml") in msg and "head=mlp-abcd1234" in msg
    assert "train.steps: 10 -> 20" in msg and "optim.lr" in msg and "--force" in msg
    assert "steps = 10" in (d / "config.toml").read_text()


def test_force_replaces_config_and_moves_outputs_aside(tmp_path):
    d = prepare_run_dir(spec(), tmp_path)
    (d / "last.pth").write_bytes(b"old")
    (d / "metrics.jsonl").write_text("{}\n")
    # files no fixed list knows: per-image records, a user's callback output
    (d / "records").mkdir()
    (d / "records" / "val-step10.npz").write_bytes(b"rec")
    (d / "my_callback.txt").write_text("mine")
    d2 = prepare_run_dir(spec(steps=20), tmp_path, force=True)
    assert d2 == d and "steps = 20" in (d / "config.toml").read_text()
    assert sorted(p.name for p in d.iterdir()) == [
        ".meta.lock",
        "config.toml",
        "meta.json",
        "superseded",
    ]
    (old,) = list((d / "superseded").iterdir())
    assert (old / "last.pth").read_bytes() == b"old" and (old / "metrics.jsonl").exists()
    assert (old / "records" / "val-step10.npz").exists() and (old / "my_callback.txt").exists()
    assert "steps = 10" in (old / "config.toml").read_text()  # the config they came from
    assert read_meta(d)["superseded"] == [str(old.relative_to(d))]


def test_new_makes_a_suffixed_dir_and_reuses_it(tmp_path):
    d = prepare_run_dir(spec(), tmp_path)
    d2 = prepare_run_dir(spec(steps=20), tmp_path, new=True)
    assert d2.name == d.name + "~2" and "steps = 20" in (d2 / "config.toml").read_text()
    assert "steps = 10" in (d / "config.toml").read_text()
    assert prepare_run_dir(spec(steps=20), tmp_path, new=True) == d2
    assert prepare_run_dir(spec(steps=30), tmp_path, new=True).name == d.name + "~3"


def test_force_and_new_together_is_an_error(tmp_path):
    with pytest.raises(TsrxError, match="exclude"):
        prepare_run_dir(spec(), tmp_path, force=True, new=True)


def test_launcher_tables_do_not_change_identity(tmp_path):
    d = prepare_run_dir(spec(), tmp_path)
    (d / "last.pth").write_bytes(b"ckpt")
    moved = spec()
    moved.config["slurm"] = {"partition": "long"}
    assert prepare_run_dir(moved, tmp_path) == d
    assert 'partition = "long"' in (d / "config.toml").read_text()
    assert (d / "last.pth").exists()
