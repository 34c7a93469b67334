"""glibc's malloc keeps freed memory for reuse in a tsrx command's process (tsrx.memory_reuse):
the page faults of repeated large allocations go away; a user's own settings are kept."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# In a fresh process: train the quickstart's TSRN (batch 16) a few steps, counting the minor
# page faults of each of the last five. The GRU's row groups allocate on worker threads, whose malloc
# arenas glibc trims back to the system after each step unless told to keep the memory.
PROBE = """
import json, resource, sys
import torch
from tsrx.registry import SR_BACKBONES
from tsrx.engine.threads import configure_threads
state = configure_threads()["malloc"]
torch.manual_seed(0)
options = {"type": "tsrn", "blocks": 1, "hidden_units": 16, "stn": False, "residual": "bicubic"}
model = SR_BACKBONES.build(options).train().to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters())
lr = torch.rand(16, 4, 16, 64).contiguous(memory_format=torch.channels_last)
hr = torch.rand(16, 4, 32, 128)
def step():
    optimizer.zero_grad()
    (model(lr) - hr).square().mean().backward()
    optimizer.step()
for _ in range(3):
    step()
per_step = []
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
# the fewest of five steps: glibc's defaults fault in every step alike, while one step's
# stray growth (a worker thread's arena) is not what is measured
print(json.dumps({"state": state, "faults": min(per_step), "per_step": per_step}))
"""


def _probe(**env: str) -> dict:
    """The probe in a command's setup (configure_threads, 2 threads: the GRU's row groups on
    worker threads, as in a run); torch's own default may be one thread on another machine."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**clean, "TSRX_THREADS": "2", "TSRX_NATIVE_GRU": "0", "TSRX_NATIVE_MISH": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_a_tsrx_process_reuses_freed_memory_instead_of_faulting_in_fresh_pages():
    default = _probe(TSRX_KEEP_FREED_MEMORY="0")
    kept = _probe()
    assert kept["state"].startswith("kept (mmap threshold 256 MiB")
    # measured here: ~6,000 faults a step with glibc's defaults, under 10 with the memory kept
    assert default["faults"] > 500, default
    assert kept["faults"] < 50, kept


@glibc_only
@pytest.mark.parametrize(
    "env, reason",
    [
        ({"TSRX_KEEP_FREED_MEMORY": "0"}, "TSRX_KEEP_FREED_MEMORY=0"),
        ({"MALLOC_TRIM_THRESHOLD_": "1000000"}, "MALLOC_TRIM_THRESHOLD_ set"),
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1000000"}, "GLIBC_TUNABLES set"),
    ],
)
def test_a_users_own_malloc_settings_or_the_switch_leave_it_alone(env, reason):
    result = _probe(**env)
    assert result["state"] == f"left alone ({reason})"
    assert result["faults"] > 500, result  # glibc as configured: the fresh pages again


def test_importing_tsrx_changes_nothing_in_the_allocator():
    """A library user's process (a notebook) keeps glibc's defaults: only commands set it."""
    code = "import tsrx, tsrx.memory_reuse as m; print(m._state)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "None"
