"""Shared test fixtures. ``workdir``: a test that asks for it runs in a fresh, empty working
directory (relative paths such as ``runs/`` and ``data/`` land there)."""

from __future__ import annotations

import pytest


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
