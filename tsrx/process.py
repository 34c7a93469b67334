"""Which process is which, beyond its PID: PIDs are reused, so a stored PID alone can name an
unrelated process later. A process is identified by host, boot, PID and its start time
(``/proc/<pid>/stat`` field 22, clock ticks since boot), with its command line for humans."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None (no such process / no /proc)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat[stat.rfind(")") + 2 :][:1]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def identity(pid: int | None = None) -> dict[str, Any]:
    """What to record so that :func:`is_same` can tell this process from a later PID reuse."""
    pid = os.getpid() if pid is None else int(pid)
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "start_ticks": start_ticks(pid),
        "cmdline": cmdline(pid)[:6],
    }


def is_same(record: dict[str, Any] | None) -> bool | None:
    """True: the recorded process is alive here; False: it is gone (or the PID now names another
    process); None: cannot tell from this host (another machine)."""
    if not isinstance(record, dict) or not str(record.get("pid", "")).isdigit():
        return None
    if record.get("host") and record["host"] != socket.gethostname():
        return None
    if record.get("boot_id") and _boot_id() and record["boot_id"] != _boot_id():
        return False  # the machine rebooted: every process of then is gone
    pid = int(record["pid"])
    ticks = start_ticks(pid)
    if ticks is None or _state(pid) == "Z":
        return False
    if record.get("start_ticks") is not None and ticks != record["start_ticks"]:
        return False
    return True
