"""The built-in report formats of ``tsrx report --format``, registered like anyone's.

rich (terminal tables), md (paste-ready Markdown), csv, json and the papers' layout
(paper-md, latex). Each is a thin class over the renderers in ``tsrx.report``; a format of
your own is a class like these in your plugin (docs/architecture.md).
"""

from __future__ import annotations

import io
from typing import Any

from tsrx.registry import REPORT_FORMATS
from tsrx.report import paper, render
from tsrx.report.tables import Report


@REPORT_FORMATS.register("rich")
class Rich:
    """Terminal tables (one per metric when the terminal is narrow); warnings as lines."""

    warnings_in_text = True

    def render(self, report: Report) -> str:
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=200, force_terminal=False, color_system=None)
        for r in render.to_rich(report, console.width):
            console.print(r)
        for w in report.warnings:
            console.print(f"warning: {w}", soft_wrap=True, highlight=False)
        return buf.getvalue()

    def show(self, report: Report, console: Any) -> None:
        """Draw on ``console`` (its width decides wide or per-metric tables); the caller
        prints the warnings (on stderr)."""
        for renderable in render.to_rich(report, console.width):
            console.print(renderable)


@REPORT_FORMATS.register("md")
class Markdown:
    """Paste-ready Markdown tables, best values in bold, warnings as quotes."""

    warnings_in_text = True

    def render(self, report: Report) -> str:
        return render.to_markdown(report)


@REPORT_FORMATS.register("csv")
class Csv:
    """One line per row and block (selector and group columns first); warnings on stderr."""

    warnings_in_text = False

    def render(self, report: Report) -> str:
        return render.to_csv(report)


@REPORT_FORMATS.register("json")
class Json:
    """Every block, row, value and warning, for scripts."""

    warnings_in_text = True

    def render(self, report: Report) -> str:
        return render.to_json(report)


@REPORT_FORMATS.register("paper-md")
class PaperMarkdown:
    """The papers' layout in Markdown: rows = methods and the bicubic / HR baselines."""

    warnings_in_text = True

    def render(self, report: Report) -> str:
        return paper.to_paper_markdown(report)


@REPORT_FORMATS.register("latex")
class Latex:
    """The papers' layout as a LaTeX table (booktabs), best method values in bold."""

    warnings_in_text = True

    def render(self, report: Report) -> str:
        return paper.to_latex(report)
