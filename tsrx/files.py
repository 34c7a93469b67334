"""Atomic text writes and UTC timestamps: the lowest layer, shared by the engine and launchers.

Torch-free, so ``tsrx status`` and the launchers can use it without importing torch.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
