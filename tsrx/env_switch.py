"""An on/off environment switch, read one way wherever tsrx has one (``TSRX_KEEP_FREED_MEMORY``,
``TSRX_NATIVE_GRU``, ``TSRX_NATIVE_MISH``): unset means on, so a user only ever turns one off."""

from __future__ import annotations

import os

OFF_WORDS = ("0", "off", "false", "no")


def switched_off(name: str) -> bool:
    """Whether the environment variable ``name`` is set to 0, off, false or no (any case)."""
    return os.environ.get(name, "").strip().lower() in OFF_WORDS
