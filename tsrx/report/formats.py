"""Report formats are registered components (``REPORT_FORMATS``), found by name like a backbone.

A format is a class registered in a plugin with ``@REPORT_FORMATS.register("name")``:
``render(report) -> str`` and ``warnings_in_text`` (does that text carry the report's
warnings? when it does not, ``tsrx report`` prints them on stderr, so no format loses them);
optionally ``show(report, console)`` to draw on a terminal. The built-ins (rich, md, csv,
json, paper-md, latex) are the plugin ``tsrx_builtin.report_formats``; a new format is one
more plugin, nothing here changes (docs/architecture.md, "Where to put a new ...").
"""

from __future__ import annotations

from typing import Protocol

from tsrx.registry import REPORT_FORMATS
from tsrx.report.tables import Report

SAMPLE_WARNING = "sample warning: a format must keep the report's warnings"


def _sample() -> Report:
    """The report a format renders once when it is built (its contract check)."""
    return Report("sample", "run", [], [SAMPLE_WARNING], [])


class ReportFormat(Protocol):
    """What tsrx uses of a format (``show(report, console)`` is optional, looked up by name)."""

    warnings_in_text: bool

    def render(self, report: Report) -> str: ...


def get_format(name: str) -> ReportFormat:
    """The format registered as ``name``, built and checked; an unknown name lists the others."""
    fmt: ReportFormat = REPORT_FORMATS.build(
        {"type": name}, "--format", "<command line>", contract_args={"sample": _sample()}
    )
    return fmt


def format_names() -> list[str]:
    return REPORT_FORMATS.names()


def render_text(report: Report, name: str) -> str:
    """The report as text in format ``name``."""
    return get_format(name).render(report)
