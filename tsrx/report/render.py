"""Report renderers: rich (terminal), Markdown (paste-ready, like the notebook), CSV and JSON
(registered as report formats by ``tsrx_builtin.report_formats``).

Every block carries its protocol, recognizer and the kind of values (test or validation),
so a pasted table never loses the conditions it was measured under.
"""

from __future__ import annotations

import csv
import io
import json
import math

from tsrx.report.run_facts import fmt_fact
from tsrx.report.tables import Block, Report, Row


def fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _label(row: Row) -> str:
    state = row.run.state
    if state == "completed":
        return row.label
    return f"{row.label} [{row.run.state_note()}]"


def _notes(block: Block) -> list[str]:
    return [f"{row.label}: {n}" for row in block.rows for n in row.notes]


# -- Markdown --------------------------------------------------------------------------
def to_markdown(report: Report) -> str:
    out: list[str] = []
    for block in report.blocks:
        best = block.best()
        out.append(f"### {block.title}")
        out.append(block.source_line())
        out.append("")
        out.append(
            "| " + " | ".join([block.row_axis, *block.lead, *block.columns, *block.trail]) + " |"
        )
        out.append("|" + "---|" * (len(block.lead) + len(block.columns) + len(block.trail) + 1))
        for i, row in enumerate(block.rows):
            cells = []
            for col in block.columns:
                text = fmt(row.cells.get(col))
                if col in row.mismatched:
                    text += "*"
                if i in best.get(col, ()):
                    text = f"**{text}**"
                cells.append(text)
            lead = [fmt_fact(c, row.facts.get(c)) for c in block.lead]
            trail = [fmt_fact(c, row.facts.get(c)) for c in block.trail]
            out.append("| " + " | ".join([_label(row), *lead, *cells, *trail]) + " |")
        notes = _notes(block)
        if notes:
            out.append("")
            out.extend(f"- {n}" for n in notes)
        out.append("")
    for w in report.warnings:
        out.append(f"> **warning:** {w}")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


# -- CSV ---------------------------------------------------------------------------------
def to_csv(report: Report) -> str:
    group_keys: list[str] = []
    for b in report.blocks:
        group_keys += [k for k in b.group if k not in group_keys]
    columns: list[str] = []
    for b in report.blocks:
        columns += [c for c in b.columns if c not in columns]
    facts: list[str] = []
    for b in report.blocks:
        facts += [c for c in (*b.lead, *b.trail) if c not in facts]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "selector",
            *group_keys,
            report.row_axis,
            "run",
            "state",
            "source",
            "protocol",
            "recognizer",
            *columns,
            *facts,
            "notes",
        ]
    )
    for b in report.blocks:
        for row in b.rows:
            w.writerow(
                [
                    b.selector,
                    *[b.group.get(k, "") for k in group_keys],
                    row.label,
                    row.run.name,
                    row.run.state,
                    row.result.source if row.result else "",
                    b.protocol,
                    b.recognizer,
                    *["" if row.cells.get(c) is None else repr(row.cells[c]) for c in columns],
                    *["" if row.facts.get(c) is None else repr(row.facts[c]) for c in facts],
                    "; ".join(row.notes),
                ]
            )
    return buf.getvalue()


# -- JSON --------------------------------------------------------------------------------
def to_json(report: Report) -> str:
    blocks = []
    for b in report.blocks:
        best = b.best()
        rows = []
        for i, row in enumerate(b.rows):
            rows.append(
                {
                    "label": row.label,
                    "run": row.run.name,
                    "path": str(row.run.path),
                    "state": row.run.state,
                    "source": row.result.source if row.result else None,
                    "from": row.result.where if row.result else None,
                    "values": {c: row.cells.get(c) for c in b.columns},
                    "best": [c for c in b.columns if i in best.get(c, ())],
                    "average_mismatch": sorted(row.mismatched),
                    "notes": row.notes,
                    "facts": {c: row.facts.get(c) for c in (*b.lead, *b.trail)},
                }
            )
        blocks.append(
            {
                "selector": b.selector,
                "group": b.group,
                "title": b.title,
                "protocol": b.protocol,
                "recognizer": b.recognizer,
                "source": b.source,
                "row_axis": b.row_axis,
                "columns": b.columns,
                "rows": rows,
            }
        )
    return (
        json.dumps(
            {
                "source": report.source,
                "row_axis": report.row_axis,
                "blocks": blocks,
                "warnings": report.warnings,
                "problems": report.problems,
            },
            indent=2,
        )
        + "\n"
    )


# -- rich --------------------------------------------------------------------------------
def _rich_table(
    block: Block, columns: list[str], title: str | None, lead: list[str] = (), trail: list[str] = ()
):
    from rich.table import Table
    from rich.text import Text

    styles = {"failed": "bold red", "running": "yellow", "missing": "dim", "pending": "dim"}
    best = block.best()
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column(block.row_axis, no_wrap=True)
    for col in (*lead, *columns, *trail):
        t.add_column(col, justify="right", no_wrap=True)
    for i, row in enumerate(block.rows):
        cells = []
        for col in columns:
            text = fmt(row.cells.get(col)) + ("*" if col in row.mismatched else "")
            style = "bold green" if i in best.get(col, ()) else ""
            if col in row.mismatched:
                style = "bold yellow"
            cells.append(Text(text, style=style))
        t.add_row(
            Text(_label(row), style=styles.get(row.run.state, "")),
            *[fmt_fact(c, row.facts.get(c)) for c in lead],
            *cells,
            *[fmt_fact(c, row.facts.get(c)) for c in trail],
        )
    return t


def to_rich(report: Report, width: int = 200) -> list:
    """Renderables for a rich console: per block one table, or, when ``width`` is too narrow
    for 12 metric columns, three (ACC, PSNR, SSIM); then notes and warnings."""
    from rich.text import Text

    out: list = []
    for block in report.blocks:
        label_w = max([len(block.row_axis)] + [len(_label(r)) for r in block.rows])
        facts_w = 13 * (len(block.lead) + len(block.trail))
        wide = label_w + 4 + 11 * len(block.columns) + facts_w <= width
        out.append(Text(block.title, style="bold"))
        out.append(Text(block.source_line(), style="dim"))
        if wide:
            out.append(_rich_table(block, block.columns, None, block.lead, block.trail))
        else:  # one table per metric (ACC of each judge, PSNR, SSIM)
            groups: dict[str, list[str]] = {}
            for col in block.columns:
                groups.setdefault(col.split("-", 1)[1], []).append(col)
            items = list(groups.items())
            for k, (suffix, cols) in enumerate(items):
                out.append(
                    _rich_table(
                        block, cols, suffix, block.lead, block.trail if k == len(items) - 1 else ()
                    )
                )
        for n in _notes(block):
            out.append(Text(f"  note: {n}", style="yellow" if "stored average" in n else "dim"))
        out.append(Text(""))
    return out
