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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tsrx.report.paired import LEGEND, MARK, describe, describe_pooled
from tsrx.report.run_facts import fmt_fact
from tsrx.report.tables import Block, Report, Row

if TYPE_CHECKING:
    from rich.table import Table


def fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _label(row: Row) -> str:
    state = row.state_label()
    return row.label if state is None else f"{row.label} [{state}]"


def _notes(block: Block) -> list[str]:
    return [f"{row.label}: {n}" for row in block.rows for n in row.notes] + block.test_notes


def cell_text(block: Block, i: int, col: str) -> str:
    """A cell as printed: the value (the seeds' mean ± their sd), ``*`` when the stored
    average disagrees, the paired tests' mark when it is not a significant best."""
    row = block.rows[i]
    text = fmt(row.cells.get(col))
    if row.seeds > 1 and row.spread.get(col) is not None:
        text += f" ± {fmt(row.spread[col])}"
    if col in row.mismatched:
        text += "*"
    if i in block.not_significant.get(col, ()):
        text += MARK
    return text


def seed_column(block: Block) -> list[str]:
    return ["seeds"] if block.seed_axis else []


def tests_lines(block: Block) -> list[str]:
    """The paired comparisons of the A columns (every split's are in the JSON), the legend."""
    lines = [
        describe(p)
        for col, found in block.comparisons.items()
        if col.startswith("A-")
        for p in found
    ]
    if any(block.not_significant.values()):
        lines.append(LEGEND)
    return lines


def pooled_lines(report: Report) -> list[str]:
    """The row values compared pooled over the other axes (and seeds), then what was not."""
    return [describe_pooled(p) for p in report.pooled] + report.pooled_notes


# -- Markdown --------------------------------------------------------------------------
def to_markdown(report: Report) -> str:
    out: list[str] = []
    for block in report.blocks:
        best = block.best()
        out.append(f"### {block.title}")
        out.append(block.source_line())
        out.append("")
        seeds = seed_column(block)
        head = [block.row_axis, *seeds, *block.lead, *block.columns, *block.trail]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for i, row in enumerate(block.rows):
            cells = []
            for col in block.columns:
                text = cell_text(block, i, col)
                if i in best.get(col, ()):
                    text = f"**{text}**"
                cells.append(text)
            lead = [fmt_fact(c, row.facts.get(c)) for c in block.lead]
            trail = [fmt_fact(c, row.facts.get(c)) for c in block.trail]
            n = [str(row.seeds)] if seeds else []
            out.append("| " + " | ".join([_label(row), *n, *lead, *cells, *trail]) + " |")
        notes = _notes(block)
        if notes:
            out.append("")
            out.extend(f"- {n}" for n in notes)
        tests = tests_lines(block)
        if tests:
            out += ["", "Paired tests:"]
            out.extend(f"- {t}" for t in tests)
        out.append("")
    pooled = pooled_lines(report)
    if pooled:
        out += [f"### {report.row_axis}, pooled over the other axes", ""]
        out += [f"- {t}" for t in pooled] + [""]
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
    seeded = any(b.seed_axis for b in report.blocks)
    spread = [f"{c} sd" for c in columns] if seeded else []
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
            *(["seeds"] if seeded else []),
            *columns,
            *spread,
            *facts,
            "best_not_significant",
            "notes",
        ]
    )
    for b in report.blocks:
        for i, row in enumerate(b.rows):
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
                    *([row.seeds] if seeded else []),
                    *["" if row.cells.get(c) is None else repr(row.cells[c]) for c in columns],
                    *(
                        ["" if row.spread.get(c) is None else repr(row.spread[c]) for c in columns]
                        if seeded
                        else []
                    ),
                    *["" if row.facts.get(c) is None else repr(row.facts[c]) for c in facts],
                    " ".join(c for c in b.columns if i in b.not_significant.get(c, ())),
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
                    "sd": {c: row.spread.get(c) for c in b.columns} if row.seeds > 1 else None,
                    "seeds": row.seeds,
                    "runs": [r.name for r in row.runs] if row.runs else [row.run.name],
                    "best": [c for c in b.columns if i in best.get(c, ())],
                    "best_not_significant": [
                        c for c in b.columns if i in b.not_significant.get(c, ())
                    ],
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
                "paired_tests": {
                    col: [{"a": p.label_a, "b": p.label_b, **p.result.as_dict()} for p in found]
                    for col, found in b.comparisons.items()
                },
                "test_notes": b.test_notes,
            }
        )
    return (
        json.dumps(
            {
                "source": report.source,
                "row_axis": report.row_axis,
                "blocks": blocks,
                "pooled_tests": [
                    {
                        "selector": p.selector,
                        "column": p.column,
                        "over": p.over,
                        "groups": p.groups,
                        "a": p.label_a,
                        "b": p.label_b,
                        **p.result.as_dict(),
                    }
                    for p in report.pooled
                ],
                "pooled_notes": report.pooled_notes,
                "warnings": report.warnings,
                "problems": report.problems,
            },
            indent=2,
        )
        + "\n"
    )


# -- rich --------------------------------------------------------------------------------
def _rich_table(
    block: Block,
    columns: list[str],
    title: str | None,
    lead: Sequence[str] = (),
    trail: Sequence[str] = (),
) -> Table:
    from rich.table import Table
    from rich.text import Text

    styles = {"failed": "bold red", "running": "yellow", "missing": "dim", "pending": "dim"}
    best = block.best()
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column(block.row_axis, no_wrap=True)
    seeds = seed_column(block)
    for col in (*seeds, *lead, *columns, *trail):
        t.add_column(col, justify="right", no_wrap=True)
    for i, row in enumerate(block.rows):
        cells = []
        for col in columns:
            text = cell_text(block, i, col)
            style = "bold green" if i in best.get(col, ()) else ""
            if col in row.mismatched:
                style = "bold yellow"
            cells.append(Text(text, style=style))
        t.add_row(
            Text(_label(row), style=styles.get(row.run.state, "")),
            *([str(row.seeds)] if seeds else []),
            *[fmt_fact(c, row.facts.get(c)) for c in lead],
            *cells,
            *[fmt_fact(c, row.facts.get(c)) for c in trail],
        )
    return t


def to_rich(report: Report, width: int = 200) -> list[Any]:
    """Renderables for a rich console: per block one table, or, when ``width`` is too narrow
    for 12 metric columns, three (ACC, PSNR, SSIM); then notes and warnings."""
    from rich.text import Text

    out: list[Any] = []
    for block in report.blocks:
        label_w = max([len(block.row_axis)] + [len(_label(r)) for r in block.rows])
        facts_w = 13 * (len(block.lead) + len(block.trail))
        cell_w = 20 if block.seed_axis else 11  # "0.5596 ± 0.0040"
        wide = label_w + 4 + cell_w * len(block.columns) + facts_w <= width
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
        for line in tests_lines(block):
            out.append(Text(f"  paired: {line}"))
        out.append(Text(""))
    pooled = pooled_lines(report)
    if pooled:
        out.append(Text(f"{report.row_axis}, pooled over the other axes", style="bold"))
        out += [Text(f"  pooled: {line}") for line in pooled] + [Text("")]
    return out
