"""glibc's malloc told to keep freed memory for reuse, in the processes that run tsrx's work.

Why: glibc serves each allocation above its mmap threshold (adapted as blocks are freed, at
most 32 MiB) with fresh pages from the kernel and unmaps them on free, and gives the top of
its heap back above a trim threshold. A CPU training step allocates and frees its larger
activations every step, so each step pays a page fault per 4 KiB touched: the quickstart's
TSRN step (batch 16) took ~6,000 minor faults, ~10,000 with the native GRU scan's buffers,
about 0.7 us each. With both thresholds raised the freed blocks are reused: ~0 faults, the
step 63 -> 58 ms with torch's GRU ops and 63 -> 52 ms with the native scan on this 2-core
machine (docs/performance.md, "Page faults").

The cost is memory held: up to ``TRIM_THRESHOLD`` bytes freed at the heap's top stay with
the process instead of going back to the system (a run's peak is what it holds anyway).
Only the allocator's bookkeeping changes, no arithmetic. Left alone: a process whose C
library is not glibc, a user's own ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES``, and ``TSRX_KEEP_FREED_MEMORY=0``. Called where a tsrx command sets up its
process (``engine.threads.configure_threads``), not on import: a library user's process
keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import platform

from tsrx.env_switch import switched_off

ENV = "TSRX_KEEP_FREED_MEMORY"
MMAP_THRESHOLD = 256 << 20  # blocks up to this size come from the reusable heap
TRIM_THRESHOLD = 512 << 20  # free memory at the heap's top kept up to this size
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_state: str | None = None


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds once per process; returns what was done."""
    global _state
    if _state is None:
        _state = _apply()
    return _state


def kept() -> bool:
    """Whether this process keeps freed memory (``keep_freed_memory`` took effect): where
    it does not, code with large per-call buffers pays fresh pages on every call."""
    return _state is not None and _state.startswith("kept")


def _apply() -> str:
    if switched_off(ENV):
        return f"left alone ({ENV}=0)"
    mine = [name for name in _USER_SETTINGS if name in os.environ]
    if mine:
        return f"left alone ({mine[0]} set)"
    if platform.libc_ver()[0] != "glibc":
        return "left alone (not glibc)"
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        done = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    except (OSError, AttributeError):
        return "left alone (no mallopt)"
    if not done:
        return "left alone (mallopt refused)"
    return f"kept (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim {TRIM_THRESHOLD >> 20} MiB)"
