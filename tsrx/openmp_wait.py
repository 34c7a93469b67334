"""How long torch's idle OpenMP threads spin before they sleep: short, set before torch loads.

Why: torch's CPU wheels use GNU OpenMP, whose threads, after each parallel op, spin for
``GOMP_SPINCOUNT`` iterations (300,000 by default: milliseconds) waiting for the next one.
Where tsrx runs work on threads of its own (the GRU scan's row groups, the ppocr judge's
concurrent calls, data-loader workers) right after a torch op, a spinning OpenMP thread holds
one of the cores they were meant to use: on the 2-core machine a bf16 TSRN GRU block on two
row groups ran no faster than on one thread (18.8 vs 18.6 ms) and 1.6x faster with the spin
cut short (11.9 ms). ``python -m bench --only train``, same machine and hour: the bf16 eval
forward / the official fp32 code 2.67x -> 3.34x, the fp32 eval forward 1.68x -> 1.94x, the
bf16 train step 3.57x -> 4.3x (docs/performance.md, "OpenMP's idle spin"). No spin at all
(``GOMP_SPINCOUNT=0``) ran small-op training 2x slower: each op then wakes sleeping threads.

Only the wait changes, not the thread count nor any arithmetic: results are bit-identical.
A ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` of the user's is kept. It takes effect only if
torch is imported after tsrx (OpenMP reads it once, when torch loads it): so in the ``tsrx``
command, its spawned ranks and Slurm tasks, ``python -m bench``; a notebook that imported
torch first keeps OpenMP's default.
"""

from __future__ import annotations

import os

SPIN_COUNT = "10000"
_KEYS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def shorten_idle_spin() -> None:
    """Set ``GOMP_SPINCOUNT`` for this process and its children, unless the user set the
    OpenMP wait or torch (and so OpenMP) is loaded already."""
    import sys

    if "torch" in sys.modules or any(k in os.environ for k in _KEYS):
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
