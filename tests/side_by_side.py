"""Independent commands started together: a test that runs two ``tsrx`` processes which
neither read nor write what the other does waits for the slower one instead of both. Most
of a short command's time is importing torch on one core; the suite runs on two."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def side_by_side(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls at once (each in a thread: each starts a process and waits for it);
    their results in the order given. An exception in one is raised here."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]
