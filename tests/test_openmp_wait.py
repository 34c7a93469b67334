"""tsrx shortens OpenMP's idle spin before torch loads (tsrx/openmp_wait.py), keeps the
user's own setting, and leaves a process that loaded torch first alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tsrx import openmp_wait

SHOW = "import os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


def _run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_importing_tsrx_sets_a_short_spin_that_torch_and_child_processes_inherit():
    code = (
        "import tsrx, torch, subprocess, sys; "
        f"subprocess.run([sys.executable, '-c', {SHOW!r}], check=True)"
    )
    assert _run(code) == f"{openmp_wait.SPIN_COUNT} None"


@pytest.mark.parametrize("key", ["GOMP_SPINCOUNT", "OMP_WAIT_POLICY"])
def test_a_setting_of_the_users_is_kept(key):
    value = "active" if key == "OMP_WAIT_POLICY" else "12345"
    out = _run(f"import tsrx; {SHOW}", **{key: value})
    assert out == ("None active" if key == "OMP_WAIT_POLICY" else "12345 None")


def test_a_process_that_loaded_torch_first_is_left_as_it_is():
    # OpenMP read its settings when torch loaded it: a later value would only mislead
    assert _run(f"import torch, tsrx; {SHOW}") == "None None"
