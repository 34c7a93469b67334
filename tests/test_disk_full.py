"""A full disk (issue 14, point 4): "no space left on device" with the path and the size the
write needed, the run marked failed, the previous checkpoint kept, no temp files left behind.

Uses a small tmpfs (needs root to mount); where mounting is not possible, the same paths are
checked with writes that fail with ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from test_engine_helpers import prepare, tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx import runfiles
from tsrx.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from tsrx.runfiles import DiskFullError


@pytest.fixture
def small_fs(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if res.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({res.stderr.strip()}); "
            "test_enospc_without_a_small_filesystem covers the same paths"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the filesystem of ``folder`` until about ``leave`` bytes are free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave))


def weights(seed: int) -> dict:
    torch.manual_seed(seed)
    return {"sr.w": torch.randn(64, 1024)}  # 256 KiB


def test_checkpoint_on_a_full_disk_keeps_the_previous_one(small_fs):
    path = small_fs / "last.pth"
    save_checkpoint(path, make_checkpoint(weights(0), step=1))
    fill(small_fs, 64 * 1024)
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(path, make_checkpoint(weights(1), step=2))
    text = str(info.value)
    assert text.startswith(f"no space left on device writing {path}: the write needed 257.8 KB"), (
        text
    )
    assert "KB free on that filesystem" in text and "previous version" in text
    assert not list(small_fs.glob(".*.tmp"))
    kept = load_checkpoint(path)
    assert kept["step"] == 1 and torch.equal(kept["model"]["sr.w"], weights(0)["sr.w"])


def test_status_on_a_full_disk_still_says_failed(small_fs):
    runfiles.write_status(small_fs, "running", 3, 10)
    fill(small_fs, 0)
    with pytest.raises(DiskFullError, match="status.json"):
        runfiles.write_status(small_fs, "running", 4, 10)
    runfiles.write_status(small_fs, "failed", 4, 10, "DiskFullError: no space left")
    assert runfiles.read_status(small_fs)["state"] == "failed"
    assert not list(small_fs.glob(".*.tmp"))


def test_training_on_a_full_disk_fails_with_one_clear_message(small_fs, tiny_data, tiny_plugin):
    exp = write_experiment(small_fs.parent / "exp", tiny_data, tiny_plugin)
    run_dir = prepare(
        exp, small_fs / "runs", ["train.steps=4", "train.ckpt_every=2", "train.val_every=100"]
    )
    fill(small_fs, 24 * 1024)  # room for status, metrics and the log, not for a checkpoint
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsrx",
            "train",
            str(exp),
            "--runs-dir",
            str(small_fs / "runs"),
            "--set",
            "train.steps=4",
            "--set",
            "train.ckpt_every=2",
            "--set",
            "train.val_every=100",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=small_fs.parent,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"no space left on device writing {run_dir / 'last.pth'}: the write needed" in out.stderr
    assert "Traceback" not in out.stderr and "PytorchStreamWriter" not in out.stderr
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "no space left" in status["error"]
    assert not list(run_dir.glob(".*.tmp"))


def test_enospc_without_a_small_filesystem(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    save_checkpoint(path, make_checkpoint(weights(0), step=1))
    real_write = os.write

    def full(fd, data):
        if real_write(fd, b"") == 0 and len(data) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(DiskFullError, match=f"no space left on device writing {path}"):
        save_checkpoint(path, make_checkpoint(weights(1), step=2))
    assert load_checkpoint(path)["step"] == 1 and not list(tmp_path.glob(".*.tmp"))


def test_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    host = runfiles._host()
    names = [
        f".status.json.tsrx-{host}-{dead}.tmp",
        f".last.pth.tsrx-{host}-{dead}.tmp",
        f".meta.json.tsrx-{host}-{os.getppid()}.tmp",
    ]
    for n in names:
        (tmp_path / n).write_text("x")
    removed = {p.name for p in runfiles.clean_stale_temps(tmp_path)}
    # the live process's temp (our parent: a submitter writing meta.json) stays
    assert removed == set(names[:2]) and (tmp_path / names[2]).exists()


def test_the_cleaner_deletes_only_files_tsrx_names(tmp_path):
    """Issue 27, point 3: a user's dotted .tmp files in a run directory survive a resume's
    clean-up; only tsrx's own temp names (host and pid of the writer) are candidates."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    users = [".my_notes.tmp", f".notes.{dead}.tmp", ".status.json.tmp", f".x.tsrx-{dead}.tmp"]
    for n in users:
        (tmp_path / n).write_text("mine")
    ours = runfiles.temp_name(tmp_path / "status.json")
    assert ours.name == f".status.json.tsrx-{runfiles._host()}-{os.getpid()}.tmp"
    dead_ours = tmp_path / f".summary.json.tsrx-{runfiles._host()}-{dead}.tmp"
    for p in (ours, dead_ours):
        p.write_text("half")
    assert set(runfiles.clean_stale_temps(tmp_path)) == {ours, dead_ours}
    assert all((tmp_path / n).read_text() == "mine" for n in users)


def test_a_temp_file_of_another_host_waits_an_hour(tmp_path):
    young = tmp_path / ".meta.json.tsrx-elsewhere-12345.tmp"
    old = tmp_path / ".status.json.tsrx-elsewhere-12345.tmp"
    for p in (young, old):
        p.write_text("x")
    an_hour_ago = time.time() - runfiles.FOREIGN_TEMP_AGE_S - 1
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert runfiles.clean_stale_temps(tmp_path) == [old] and young.exists()


def test_resume_keeps_the_users_tmp_files(tmp_path, tiny_data):
    """The probe's case end to end: a resumed run directory keeps .my_notes.tmp."""
    from tsrx.engine.distributed import DistEnv
    from tsrx.engine.run import _take_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".my_notes.tmp").write_text("notes")
    stale = run_dir / f".last.pth.tsrx-{runfiles._host()}-999999999.tmp"
    stale.write_bytes(b"half")
    lock = _take_run_dir(run_dir, DistEnv(), "cpu")
    try:
        assert not stale.exists() and (run_dir / ".my_notes.tmp").read_text() == "notes"
    finally:
        lock.release()


def test_half_built_data_cache_is_removed_by_the_next_builder(tmp_path, tiny_data):
    from tsrx.data.cache import cache_key, load_or_build

    lmdb = tiny_data / "test" / "easy"
    cache_dir = tmp_path / "cache"
    key = cache_key(lmdb, [32, 128], [16, 64], True)
    half = cache_dir / f".{key}.tmp-dead1234"
    half.mkdir(parents=True)
    (half / "hr.npy").write_bytes(b"\0" * 100)
    entry = load_or_build(lmdb, [32, 128], [16, 64], True, cache_dir)
    assert not half.exists() and entry.folder == cache_dir / key
