"""data.holdout: N training images as the validation split, never trained on, chosen by a seeded
order of their own; without it (and without [data.val]) a run warns that it selects its
checkpoints on the test split, and records so for the report."""

from __future__ import annotations

import json

import pytest
import torch
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx.data.holdout import HOLDOUT, holdout_order, split_positions
from tsrx.data.loader import build_datasets
from tsrx.errors import ConfigError, TsrxError

WARNING = "validates on the test split"


def _data(root, **kw):
    cfg = {
        "root": str(root),
        "hr_size": [32, 128],
        "lr_size": [16, 64],
        "mask": True,
        "voc_type": "all",
        "max_len": 100,
        "skip_bad": False,
        "cache": False,
        "num_workers": 0,
        "train": {"type": "textzoom", "roots": ["train1"]},
        "val": {},
        "test": {s: {"type": "textzoom", "roots": [f"test/{s}"]} for s in ("easy", "medium")},
    }
    cfg.update(kw)
    return cfg


def _positions(part):
    return [part.lmdb_index(i)[1] - 1 for i in range(len(part))]


def test_holdout_and_training_images_partition_the_training_set(tiny_data):
    whole, _, _ = build_datasets(_data(tiny_data))
    train, val, test = build_datasets(_data(tiny_data, holdout=10, holdout_seed=0))
    assert list(val) == [HOLDOUT] and list(test) == ["easy", "medium"]
    held, rest = _positions(val[HOLDOUT]), _positions(train)
    assert len(held) == 10 and len(rest) == len(whole) - 10 == 30
    assert not set(held) & set(rest) and sorted(held + rest) == list(range(len(whole)))
    assert held != list(range(10))  # a permutation's choice, not the first ten
    # each item is the training set's image at that position, re-indexed within its split
    for part, positions in ((val[HOLDOUT], held), (train, rest)):
        for i in (0, len(part) - 1):
            item, original = part[i], whole[positions[i]]
            assert item["index"] == i and item["label"] == original["label"]
            assert torch.equal(item["hr"], original["hr"]) and torch.equal(
                item["lr"], original["lr"]
            )
    with pytest.raises(IndexError):
        val[HOLDOUT][10]


def test_same_seed_same_split_other_seed_other_split(tiny_data):
    def held(**kw):
        return _positions(build_datasets(_data(tiny_data, **kw))[1][HOLDOUT])

    first = held(holdout=10, holdout_seed=4)
    assert held(holdout=10, holdout_seed=4) == first
    assert held(holdout=10, holdout_seed=5) != first
    assert held(holdout=10) == held(holdout=10, holdout_seed=0)  # seed 0 by default
    assert set(held(holdout=5, holdout_seed=4)) <= set(first)  # a larger holdout keeps these
    # a hash order, not a random generator's: the same on every machine and torch version
    assert holdout_order(8, 0) == [7, 4, 3, 2, 6, 0, 5, 1]
    assert split_positions(8, 3, 0) == ([3, 4, 7], [0, 1, 2, 5, 6])


def test_holdout_errors_name_the_keys_and_values(tiny_data, tiny_plugin, tmp_path):
    from tsrx.config.experiment import load_experiment

    with pytest.raises(
        TsrxError, match=r"data.holdout = 40: data.train \(.*train1\) has 40 usable"
    ):
        build_datasets(_data(tiny_data, holdout=40))
    val = {"easy": {"type": "textzoom", "roots": ["test/easy"]}}
    with pytest.raises(TsrxError, match=r"data.holdout = 3 and \[data.val\] \(easy\).*choose one"):
        build_datasets(_data(tiny_data, holdout=3, val=val))
    with pytest.raises(TsrxError, match=r"data.holdout = 3 needs \[data.train\]"):
        build_datasets(_data(tiny_data, holdout=3, train=None))
    exp = write_experiment(tmp_path, tiny_data, tiny_plugin)
    for override, message in [
        ("data.holdout=-1", r"data.holdout: expected an integer >= 0, got '-1'"),
        ("data.holdout=2.5", r"data.holdout: expected an integer >= 0, got '2.5'"),
        ('data.holdout_seed="x"', r"data.holdout_seed: expected an integer"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_experiment(exp, [override])
    with pytest.raises(ConfigError, match=r"data.holdout = 3 and \[data.val\].*choose one"):
        load_experiment(
            exp, ["data.holdout=3", 'data.val.easy={type="textzoom", roots=["test/easy"]}']
        )


def _train(tmp_path, tiny_data, tiny_plugin, overrides=()):
    from tsrx.engine.run import run_training

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin)
    steps = ["train.steps=4", "train.val_every=2", "train.ckpt_every=2"]
    run_dir = prepare(exp, tmp_path / "runs", [*steps, *overrides])
    return run_dir, run_training(run_dir, device="cpu")


def test_a_run_validates_on_the_held_out_images_and_reports_test(tmp_path, tiny_data, tiny_plugin):
    from tsrx.report.collect import validates_on_test

    run_dir, result = _train(
        tmp_path, tiny_data, tiny_plugin, ["data.holdout=10", "data.holdout_seed=7"]
    )
    assert result["state"] == "completed"
    for val in metrics(run_dir, "val"):
        assert list(val["result"]["splits"]) == [HOLDOUT]
        assert val["result"]["splits"][HOLDOUT]["n"] == 10
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["validation"] == {
        "source": HOLDOUT,
        "on_test": False,
        "holdout": 10,
        "holdout_seed": 7,
    }
    assert list(summary["best"]["best_psnr"]["result"]["splits"]) == [HOLDOUT]
    # the final evaluation reads the test splits: never the validation result reused
    assert list(summary["final"]["splits"]) == ["easy", "medium", "hard"]
    assert WARNING not in (run_dir / "logs" / "rank0.log").read_text()
    config = _config(run_dir)
    assert config["data"]["holdout"] == 10 and not validates_on_test(config)


def test_a_held_out_run_resumes(tmp_path, tiny_data, tiny_plugin, monkeypatch):
    from tsrx.engine.run import run_training

    monkeypatch.setenv("TINY_STOP_AT", "3")
    run_dir, result = _train(tmp_path, tiny_data, tiny_plugin, ["data.holdout=10"])
    assert result["state"] == "preempted"
    monkeypatch.delenv("TINY_STOP_AT")
    again = run_training(run_dir, device="cpu")  # the sampler's state fits the 30 left to train
    assert again["state"] == "completed" and again["step"] == 4


def test_validation_on_test_warns_once_and_is_recorded(tmp_path, tiny_data, tiny_plugin):
    from tsrx.report.collect import validates_on_test

    run_dir, result = _train(tmp_path, tiny_data, tiny_plugin)
    assert result["state"] == "completed"
    log = (run_dir / "logs" / "rank0.log").read_text()
    assert log.count(WARNING) == 1
    assert "data.holdout = N" in log and "[data.val]" in log
    assert [list(m["result"]["splits"]) for m in metrics(run_dir, "val")] == [
        ["easy", "medium", "hard"]
    ] * 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["validation"] == {"source": "test", "on_test": True}
    assert validates_on_test(_config(run_dir))


def _config(run_dir):
    from tsrx.config.load import tomllib

    return tomllib.loads((run_dir / "config.toml").read_text())


@pytest.mark.slow
def test_two_processes_and_data_workers_train_and_validate_on_the_same_split(
    tmp_path, tiny_data, tiny_plugin
):
    """DDP shards the 30 images left to train on and the 10 held out (1 vs 2 gloo processes,
    one data worker each: the split travels to the workers), as it does the whole set."""
    from test_engine_helpers import weights

    from tsrx.cli.train_cmd import train_run_dir
    from tsrx.records import read_records

    dirs = {}
    for name, nproc in (("one", 1), ("two", 2)):
        exp = write_experiment(tmp_path, tiny_data, tiny_plugin, name)
        dirs[name] = prepare(exp, tmp_path / "runs", ["data.holdout=10", "data.num_workers=1"])
        assert train_run_dir(dirs[name], nproc, "cpu") == "completed"
    w1, w2 = weights(dirs["one"] / "last.pth"), weights(dirs["two"] / "last.pth")
    for k in w1:  # the same global batches: both ranks drew from the same 30 images
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    step = metrics(dirs["one"], "val")[-1]["step"]
    r1, r2 = (read_records(d / "records" / f"val-step{step:08d}.npz") for d in dirs.values())
    assert len(r1) == 10 and r1.same_images(r2) and r1.splits == [HOLDOUT]
    assert len(set(r1.index.tolist())) == 10  # 1-based training positions: one per image


def test_report_columns_never_read_the_holdout_split_as_hard():
    from tsrx.report.tables import columns_for, split_columns

    assert split_columns(["easy", "medium", "hard"]) == {"easy": "E", "medium": "M", "hard": "H"}
    assert columns_for([HOLDOUT]) == [
        "holdout-ACC",
        "A-ACC",
        "holdout-PSNR",
        "A-PSNR",
        "holdout-SSIM",
        "A-SSIM",
    ]
    assert split_columns(["small", "easy"]) == {"small": "S", "easy": "E"}
