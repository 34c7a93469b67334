"""A process-wide thread pool that grows to the largest size asked for.

Three plugins keep threads of their own: the GRU scan's row-group workers (``gru_scan``),
ppocr's concurrent single-threaded ONNX calls (``ppocr``) and the native kernels' calls side
by side (``native_build``). Each needs the same three things: at least N threads; the pool
replaced only by a larger one (a narrower batch uses fewer of its threads instead of a new
pool per size); and, in a forked child (a DataLoader worker), none of the parent's threads,
which do not exist there: the child starts its own pool when it first asks.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class GrowingPool:
    """``at_least(n)``: this process's pool of ``n`` or more threads, named ``name``;
    ``start(n)`` makes a pool where the threads need setting up (default: plain threads)."""

    def __init__(self, name: str, start: Callable[[int], ThreadPoolExecutor] | None = None):
        self._start = start or (lambda size: ThreadPoolExecutor(size, name))
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self.size = 0
        self._lock = threading.Lock()

    @property
    def current(self) -> ThreadPoolExecutor | None:
        """The pool as it is now (None before the first ask)."""
        return self._pool

    def at_least(self, size: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self.size < size:
                if self._pool is not None:
                    self._pool.shutdown(wait=False)
                self._pool, self.size = self._start(size), size
            return self._pool
