"""Shared test set-up: every test runs with a fresh working directory and no third-party
plugin autoloading unless it asks for it."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TSRX_TEST", "1")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
