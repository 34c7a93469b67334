"""The three ways a native kernel (plugins/native_build.py) is not there, for the tests that
check the torch ops run instead: its switch set to 0, no compiler, a build that fails."""

from __future__ import annotations

import pytest

WAYS = ["switched off", "no compiler", "build fails"]


def make_unavailable(how: str, switch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the kernel behind the environment variable ``switch`` away, the way ``how`` says."""
    if how == "switched off":
        monkeypatch.setenv(switch, "0")
    elif how == "no compiler":
        monkeypatch.setenv("CC", "no-such-compiler-tsrx")
    else:
        monkeypatch.setenv("CC", "false")  # exits 1: the build fails
