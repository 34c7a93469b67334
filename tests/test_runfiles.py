"""Damaged run files give errors that name the file, what was expected and what to do, never
a traceback (issue 14, point 6); and the one home of run-file I/O (tsrx.runfiles)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from test_engine_helpers import prepare, tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx import runfiles
from tsrx.errors import TsrxError
from tsrx.launch import control, status


def tsrx(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *args], capture_output=True, text=True, cwd=cwd, timeout=180
    )


def run_dir_with(tmp_path, meta: bytes) -> Path:  # noqa: F821
    d = tmp_path / "runs" / "exp" / "r"
    d.mkdir(parents=True)
    (d / "config.toml").write_text("[train]\nsteps = 2\n")
    (d / "meta.json").write_bytes(meta)
    return d


def test_meta_of_the_wrong_shape_is_named_by_status_and_cancel(tmp_path):
    d = run_dir_with(tmp_path, b'{"jobs": 5}')
    row = status.run_status(d)
    assert row.state == "damaged"
    assert "meta.json: 'jobs' should be a list of job records, got 5" in row.error
    out = tsrx("status", "runs", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "damaged" in out.stdout and "Traceback" not in out.stderr + out.stdout
    with pytest.raises(TsrxError, match=r"meta.json: 'jobs' should be a list.*mv .*meta.json.bad"):
        control.cancel([d])


def test_binary_meta_is_named_by_train_and_cancel(tmp_path):
    d = run_dir_with(tmp_path, bytes(range(256)) * 4)
    with pytest.raises(TsrxError, match="meta.json: the run's metadata is not text"):
        control.cancel([d])
    out = tsrx("cancel", str(d), cwd=tmp_path)
    assert out.returncode == 2 and "is not text" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(TsrxError, match="meta.json: the run's metadata is not text"):
        runfiles.read_meta(d)


def test_train_with_binary_meta_says_which_file(tmp_path, tiny_data, tiny_plugin):
    exp = write_experiment(tmp_path, tiny_data, tiny_plugin)
    d = prepare(exp, tmp_path / "runs", ["train.steps=2"])
    (d / "meta.json").write_bytes(b"\x80\x81\xff" * 10)
    out = tsrx(
        "train",
        str(exp),
        "--set",
        "train.steps=2",
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    assert "meta.json: the run's metadata is not text" in out.stderr
    assert "Traceback" not in out.stderr


def test_resume_from_a_checkpoint_of_another_model_is_a_clear_error(
    tmp_path, tiny_data, tiny_plugin
):
    from tsrx.checkpoint import make_checkpoint, save_checkpoint
    from tsrx.engine.run import run_training

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin)
    d = prepare(exp, tmp_path / "runs", ["train.steps=2"])
    save_checkpoint(
        d / "last.pth",
        make_checkpoint(
            {"sr.other.weight": torch.zeros(3, 3)}, optimizer={}, scheduler={}, step=1, epoch=0
        ),
    )
    with pytest.raises(TsrxError) as info:
        run_training(d, device="cpu")
    text = str(info.value)
    assert f"{d / 'last.pth'}: cannot resume this run from it" in text
    assert "Missing key" in text and "--force" in text
    assert json.loads((d / "status.json").read_text())["state"] == "failed"


def test_status_file_checks_and_strict_json(tmp_path):
    (tmp_path / "status.json").write_text('{"state": 3}')
    with pytest.raises(TsrxError, match="'state' should be one of running"):
        runfiles.read_status(tmp_path)
    assert runfiles.read_meta(tmp_path / "nowhere") == {}
    runfiles.atomic_json(tmp_path / "x.json", {"psnr": float("nan"), "acc": [float("inf"), 1.0]})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"psnr": None, "acc": [None, 1.0]}
