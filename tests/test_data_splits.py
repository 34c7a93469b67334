"""`tsrx data check` and training name a split that is a plain file, has no data.mdb or is
empty (issue 14, point 8)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_data_support import good_entries, write_raw_lmdb

from tsrx.data.textzoom import TextZoomDataset
from tsrx.errors import TsrxError


def tsrx(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="250"),
    )


@pytest.fixture
def broken_root(tmp_path):
    root = tmp_path / "TextZoom"
    write_raw_lmdb(root / "train1", good_entries(3))
    (root / "train2").write_text("not an lmdb")  # a plain file
    (root / "test" / "easy").mkdir(parents=True)  # no data.mdb
    write_raw_lmdb(root / "test" / "medium", {b"num-samples": b"0"})  # empty
    write_raw_lmdb(root / "test" / "hard", good_entries(2))
    return root


def test_data_check_names_each_broken_split(broken_root):
    out = tsrx("data", "check", broken_root)
    assert out.returncode == 1, out.stdout + out.stderr
    text = out.stdout
    assert "train1: 3 entries, ok" in text and "test/hard: 2 entries, ok" in text
    assert "train2: 0 entries, 1 bad" in text and "a plain file, not an LMDB folder" in text
    assert "test/easy: 0 entries, 1 bad" in text and "a folder without data.mdb" in text
    assert "test/medium: 0 entries, 1 bad" in text and "empty split: num-samples is 0" in text


@pytest.mark.parametrize(
    "split,message",
    [
        ("train2", r"split train2 \(.*train2\): a plain file, not an LMDB folder"),
        ("test/easy", r"split test/easy \(.*easy\): a folder without data.mdb"),
        ("test/medium", r"split test/medium \(.*medium\) is empty: its num-samples is 0"),
    ],
)
def test_datasets_name_the_split(broken_root, split, message):
    with pytest.raises(TsrxError, match=message):
        TextZoomDataset(
            root=str(broken_root),
            roots=["train1", split],
            hr_size=[32, 128],
            lr_size=[16, 64],
            mask=True,
            voc_type="all",
            max_len=100,
            skip_bad=False,
            cache=False,
        )


def test_train_on_an_empty_split_names_it(broken_root, tmp_path):
    exp = tmp_path / "e.toml"
    exp.write_text(f'''
name = "e"
[data]
root = "{broken_root}"
train = {{ type = "textzoom", roots = ["test/medium"] }}
num_workers = 0
[model]
sr = {{ type = "tsrn", blocks = 1, hidden_units = 8, stn = false }}
[train]
steps = 2
batch_size = 2
''')
    out = tsrx("train", exp, "--runs-dir", tmp_path / "runs", "--device", "cpu", cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "split test/medium" in out.stderr and "is empty: its num-samples is 0" in out.stderr
    assert "cannot be sharded" not in out.stderr and "Traceback" not in out.stderr
