"""``tsrx data synth | inspect | check`` as a user runs them (subprocess on real files)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial

import pytest
from PIL import Image
from side_by_side import side_by_side
from test_data_support import good_entries, write_raw_lmdb


def tsrx(*args, cwd=None):
    cmd = [sys.executable, "-c", "from tsrx.cli.main import main; main()", *map(str, args)]
    env = dict(os.environ, COLUMNS="200")  # no line wrapping inside the checked messages
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_synth_inspect_check(tmp_path):
    out = tmp_path / "synth"
    r = tsrx(
        "data", "synth", out, "--train", 12, "--test", 3, 4, 5, "--seed", 2, "--fonts", "builtin"
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "test").iterdir()) == ["easy", "hard", "medium"]
    manifest = json.loads((out / "synth.json").read_text())
    assert manifest["test"] == [3, 4, 5] and manifest["fonts"] == ["builtin"]

    # three commands that only read the set, side by side
    r, easy, check = side_by_side(
        partial(tsrx, "data", "inspect", out, "-o", tmp_path / "sheet.png", "--json"),
        partial(tsrx, "data", "inspect", out / "test" / "easy"),
        partial(tsrx, "data", "check", out),
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert [s["name"] for s in info["splits"]] == [
        "train1",
        "train2",
        "test/easy",
        "test/medium",
        "test/hard",
    ]
    assert [s["num_samples"] for s in info["splits"]] == [12, 2, 3, 4, 5]  # train2: 12*2794/14573
    assert manifest["train2"] == 2
    hard = info["splits"][4]
    assert sum(hard["label_lengths"].values()) == 5 and hard["outside_vocabulary"] == []
    assert 16 <= hard["hr_h"][0] <= hard["hr_h"][1] <= 64
    assert hard["bicubic"] is None
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.width > 500 and sheet.height > 200

    assert easy.returncode == 0 and "easy" in easy.stdout

    assert check.returncode == 0, check.stdout + check.stderr
    assert "test/hard: 5 entries, ok" in check.stdout


def test_synth_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    r = tsrx("data", "synth", tmp_path, "--train", 2, "--test", 1, 1, 1)
    assert r.returncode == 2 and "not empty" in r.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_check_reports_every_problem_and_fails(tmp_path):
    entries = good_entries(4)
    entries[b"label-000000001"] = b"\xff"
    entries[b"image_hr-000000003"] = b"GIF89a garbage"
    entries[b"label-000000004"] = b"abc"
    write_raw_lmdb(tmp_path / "root" / "test" / "easy", entries)
    write_raw_lmdb(tmp_path / "root" / "train1", good_entries(2))
    r, digit = side_by_side(
        partial(tsrx, "data", "check", tmp_path / "root"),
        partial(tsrx, "data", "check", tmp_path / "root", "--voc-type", "digit"),
    )
    assert r.returncode == 1
    assert "train1: 2 entries, ok" in r.stdout
    assert "test/easy: 4 entries, 2 bad" in r.stdout
    assert "(split test/easy) index 1: label is not UTF-8" in r.stdout
    assert (
        "(split test/easy) index 3: 'image_hr-000000003': cannot decode image (not an image"
        in r.stdout
    )
    assert "index 4: label 'abc' has no character of vocabulary 'digit'" in digit.stdout


def test_not_a_data_set(tmp_path):
    r = tsrx("data", "check", tmp_path)
    assert r.returncode == 2 and "no LMDB found" in r.stderr


def test_bicubic_baseline_orders_the_splits(tmp_path):
    """The synthetic splits get harder easy -> medium -> hard, and leave room for SR."""
    from tsrx.data.synth import synthesize
    from tsrx.data.textzoom import open_lmdb_dataset
    from tsrx.engine.data_stats import bicubic_baseline

    synthesize(tmp_path / "s", train=0, test=[40, 40, 40], seed=0, fonts="builtin")
    res = {
        s: bicubic_baseline(open_lmdb_dataset(tmp_path / "s" / "test" / s))
        for s in ("easy", "medium", "hard")
    }
    assert res["easy"]["psnr"] > res["medium"]["psnr"] > res["hard"]["psnr"]
    assert res["easy"]["ssim"] > res["medium"]["ssim"] > res["hard"]["ssim"]
    assert res["easy"]["psnr"] < 30 and res["easy"]["ssim"] < 0.9
