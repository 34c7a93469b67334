"""Errors a user can act on.

Every error tsrx raises on bad input derives from :class:`TsrxError`; the CLI
prints its message as one paragraph and exits with code 2 (no traceback unless
``--debug``). Anything else escaping is a bug in tsrx and keeps its traceback.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class TsrxError(Exception):
    """Bad input, named precisely: the file, key or value and what was expected."""

    exit_code = 2


def suggest(word: str, choices: Iterable[str], n: int = 3) -> str:
    """' (did you mean 'x'?)' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def source_file(obj: Any) -> str:
    """The file that defines ``obj`` (its class for an instance), or '?': where an error
    about a component sends the reader."""
    target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    try:
        return inspect.getsourcefile(target) or "?"
    except TypeError:
        return "?"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in an experiment file, located as ``file:table.key``."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(TsrxError):
    """All problems found in an experiment, reported together rather than one per attempt."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = list(issues)
        n = len(self.issues)
        head = (
            "1 problem in the experiment configuration:"
            if n == 1
            else (f"{n} problems in the experiment configuration:")
        )
        super().__init__("\n".join([head] + [f"  - {i}" for i in self.issues]))


def dedupe_issues(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    """One issue per location: the same mistake in every grid point is reported once (a
    message tagged `` [run NAME]`` counts as the same message for every run)."""
    seen: dict[tuple[str, str, str], ConfigIssue] = {}
    for iss in issues:
        base = iss.message.split(" [run ")[0]
        seen.setdefault((iss.file, iss.key, base), iss)
    return list(seen.values())
