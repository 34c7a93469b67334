"""Shared test fixtures. ``workdir``: a test that asks for it runs in a fresh, empty working
directory (relative paths such as ``runs/`` and ``data/`` land there)."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess

import pytest


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pytest_runtest_teardown(item, nextitem):
    """After a test on the test Slurm, cancel whatever of its jobs is left: a test that failed
    midway may leave a job queued or running (one held at a validation waits up to 15 min),
    and the next test would wait for the node behind it. Only the private test Slurm
    (slurm/start.sh's, running for this session): never a real cluster's SLURM_CONF."""
    from slurm_fixture import SLURM_ROOT

    ours = str(SLURM_ROOT / "etc" / "slurm.conf")
    if (
        "slurm_cluster" in getattr(item, "fixturenames", ())
        and os.environ.get("SLURM_CONF") == ours
        and shutil.which("scancel")
    ):
        subprocess.run(
            ["scancel", "--user", getpass.getuser()],
            capture_output=True,
            timeout=60,
            check=False,
            env={**os.environ, "SLURM_CONF": ours},
        )


# The reading store (tsrx/engine/reading_store.py) is off in tests, and in the commands they
# start: tests count reads, and none may write into the user's cache. tests/test_reading_store.py
# turns it on in a temporary folder.
os.environ["TSRX_READING_STORE"] = "off"
