"""A read-only run directory: a resume (or a submit) says so and what to do, naming the
directory, instead of an EROFS traceback at .meta.lock (issue 27, point 4, the resume part).
The read-only filesystem is simulated: root may write through file modes, and a read-only
mount needs privileges a test does not have."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import pytest

from tsrx import runfiles
from tsrx.launch.rundir import record_job
from tsrx.runfiles import ReadOnlyRunDir, update_meta
from tsrx.writer import WriterLock


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """``tmp_path/run`` with its files, on a 'read-only filesystem': opening anything there
    for writing fails with EROFS, as on a read-only mount."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text('{"run": "main", "jobs": []}\n')
    real_open, real_os_open = builtins.open, os.open

    def inside(path) -> bool:
        return Path(path).resolve().parent == run.resolve()

    def ro_open(file, mode="r", *a, **kw):
        if isinstance(file, (str, Path)) and inside(file) and any(c in mode for c in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *a, **kw)

    def ro_os_open(path, flags, *a, **kw):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_os_open(path, flags, *a, **kw)

    monkeypatch.setattr(builtins, "open", ro_open)
    monkeypatch.setattr(runfiles.os, "open", ro_os_open)
    return run


def test_updating_meta_of_a_read_only_run_is_a_clear_error(read_only):
    for write in (
        lambda: update_meta(read_only, threads=1),
        lambda: record_job(read_only, "1234", "slurm", event="start"),
    ):
        with pytest.raises(ReadOnlyRunDir) as err:
            write()
        msg = str(err.value)
        assert f"run directory {read_only} cannot be written (a read-only filesystem" in msg
        assert "Nothing was changed" in msg and f"cp -r {read_only} NEW" in msg
    assert (read_only / "meta.json").read_text() == '{"run": "main", "jobs": []}\n'


def test_training_a_read_only_run_is_refused_before_anything_runs(read_only):
    with pytest.raises(ReadOnlyRunDir, match=r"\.writer\.lock\): training \(a resume too\)"):
        WriterLock(read_only).acquire()


def test_a_writable_run_is_unaffected(tmp_path):
    (tmp_path / "meta.json").write_text("{}")
    assert update_meta(tmp_path, threads=2)["threads"] == 2
