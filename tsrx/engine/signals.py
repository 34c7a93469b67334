"""A stop request that the training loop honours at the next step boundary.

The launcher calls :func:`request_stop` from its signal handling (Slurm's pre-timeout
signal, preemption); the trainer reads :func:`stop_requested` every step and all ranks
agree through one all_reduce, so every rank stops after the same step, saves
``last.pth`` and returns ``{"state": "preempted"}``. Only a flag is set here: it is
safe to call from a signal handler.
"""

from __future__ import annotations

_reason: str | None = None


def request_stop(reason: str = "stop requested") -> None:
    global _reason
    if _reason is None:
        _reason = reason


def stop_requested() -> str | None:
    """The reason given to :func:`request_stop`, or None."""
    return _reason


def clear() -> None:
    """Forget a request (a new run in the same process starts clean)."""
    global _reason
    _reason = None
