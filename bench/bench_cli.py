"""Item 4: CLI start-up, the time a user waits for ``tsrx`` to answer.

Each command runs as a fresh process (the installed ``tsrx`` script, as a user types it) in
a scratch folder holding an empty ``runs/``; the median of several runs is reported. A
second run under ``python -X importtime`` tells whether torch was imported: ``--help``
and ``status`` must not import it (target < 0.3 s), ``config validate`` may (it checks
component tables against the registered constructors).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import row

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.3
COMMANDS = [
    ("tsrx --help", ["--help"], True),
    ("tsrx status", ["status"], True),
    (
        "tsrx config validate experiments/uncertainty_grid.toml",
        ["config", "validate", str(REPO / "experiments" / "uncertainty_grid.toml")],
        False,
    ),
]


def tsrx_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m tsrx``."""
    script = Path(sys.executable).parent / "tsrx"
    if script.exists():
        return [str(script)]
    found = shutil.which("tsrx")
    return [found] if found else [sys.executable, "-m", "tsrx"]


def imports_torch(args: list[str], cwd: Path) -> bool:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tsrx", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    # lines: "import time: self [us] | cumulative | imported package"
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in proc.stderr.splitlines())


def time_command(cmd: list[str], cwd: Path, reps: int) -> tuple[list[float], int, str]:
    times, rc, err = [], 0, ""
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        rc, err = proc.returncode, proc.stderr.strip()[-300:]
    return times, rc, err


def run(smoke: bool = False) -> list[dict]:
    """Rows: median seconds per command, with the exit code and whether torch was imported."""
    reps = 2 if smoke else 7
    base = tsrx_command()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tsrx-bench-cli-") as tmp:
        cwd = Path(tmp)
        (cwd / "runs").mkdir()
        for name, args, fast in COMMANDS:
            # in smoke mode the slow command runs once and its import check is skipped
            times, rc, err = time_command(base + args, cwd, reps if fast or not smoke else 1)
            median = statistics.median(times)
            torch_loaded = imports_torch(args, cwd) if fast or not smoke else None
            ok = (median < TARGET_S and not torch_loaded and rc == 0) if fast else rc == 0
            rows.append(
                row(
                    "cli",
                    name,
                    median,
                    "s",
                    f"< {TARGET_S} s, no torch" if fast else "exit 0",
                    ok,
                    runs_s=times,
                    exit_code=rc,
                    imports_torch=torch_loaded,
                    stderr=err if rc else "",
                )
            )
    return rows
