"""Where tsrx keeps what it can rebuild (judges' readings, compiled kernels): one folder per
user, ``$TSRX_CACHE_DIR``, else ``$XDG_CACHE_HOME/tsrx``, else ``~/.cache/tsrx``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path | None:
    """tsrx's cache folder, or None where there is none (no HOME and no passwd entry, as in
    some containers, and neither variable set)."""
    chosen = os.environ.get("TSRX_CACHE_DIR", "").strip()
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg:
        return Path(xdg) / "tsrx"
    try:
        return Path.home() / ".cache" / "tsrx"
    except RuntimeError:
        return None
