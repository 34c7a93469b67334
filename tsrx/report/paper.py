"""The layout STISR papers print: rows = methods, columns = judges x easy / medium / hard / average.

One table per report block (checkpoint selector and group): a row per run, then the
``bicubic`` and ``HR`` baselines (taken from the first result of the block that holds
them: ``tsrx eval --baselines``; else from a run's final evaluation in summary.json,
``[eval] baselines = true``). ACC in percent, as in the
papers; PSNR and SSIM averages once, at the end. Markdown (``paper-md``) or LaTeX
(``latex``, booktabs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from tsrx.report.paired import LEGEND, MARK
from tsrx.report.tables import Block, Report, metric_value, recomputed_average, split_columns

BASELINE_LABELS = {"bicubic": "Bicubic", "hr": "HR"}


def _acc(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _values(
    result: dict[str, Any], splits: list[str], judges: list[str | None]
) -> list[float | None]:
    out = []
    for judge in judges:
        for s in splits:
            values = (result.get("splits") or {}).get(s) or {}
            out.append(metric_value(values, "acc", judge))
        out.append(recomputed_average(result, "acc", judge))
    return out + [recomputed_average(result, "psnr"), recomputed_average(result, "ssim")]


def _columns(block: Block, splits: list[str], judges: list[str | None]) -> list[str]:
    """The report block's column behind each paper column (for the paired tests' marks)."""
    letters = split_columns(splits)
    out = []
    for judge in judges:
        suffix = f"ACC:{judge}" if judge else "ACC"
        out += [f"{letters[s]}-{suffix}" for s in splits] + [f"A-{suffix}"]
    return out + ["A-PSNR", "A-SSIM"]


def _text(values: list[float | None], spread: list[float | None] | None = None) -> list[str]:
    """ACC in percent with one decimal, PSNR two, SSIM four; ``±sd`` over seeds when given."""
    out = []
    for k, v in enumerate(values):
        kind = "psnr" if k == len(values) - 2 else "ssim" if k == len(values) - 1 else "acc"
        shows: dict[str, Callable[[float | None], str]] = {
            "acc": _acc,
            "psnr": lambda x: _num(x, 2),
            "ssim": lambda x: _num(x, 4),
        }
        show = shows[kind]
        text = show(v)
        sd = spread[k] if spread else None
        if sd is not None and v is not None and not math.isnan(sd):
            text += "±" + (f"{100 * sd:.1f}" if kind == "acc" else show(sd))
        out.append(text)
    return out


def _row(result: dict[str, Any], splits: list[str], judges: list[str | None]) -> list[str]:
    return _text(_values(result, splits, judges))


def _method_cells(block: Block, i: int, splits: list[str], judges: list[str | None]) -> list[str]:
    """A method's cells: the seeds' mean ± sd when the row holds several, the paired tests'
    mark on a best value that is not significantly better than the runner-up."""
    row = block.rows[i]
    results = row.results or ([row.result] if row.result is not None else [])
    per_seed = [_values(r.values, splits, judges) for r in results]
    mean: list[float | None] = []
    spread: list[float | None] = []
    for column in zip(*per_seed):
        vals = [v for v in column if v is not None and not math.isnan(v)]
        m = sum(vals) / len(vals) if vals else None
        mean.append(m)
        spread.append(
            math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
            if m is not None and len(vals) > 1
            else None
        )
    cells = _text(mean, spread if len(per_seed) > 1 else None)
    for k, col in enumerate(_columns(block, splits, judges)):
        if i in block.not_significant.get(col, ()):
            cells[k] += MARK
    return cells


def paper_rows(block: Block) -> tuple[list[str], list[str | None], list[tuple[str, list[str]]]]:
    """(splits, judges, [(method, cells)]) of one block."""
    splits: list[str] = []
    for row in block.rows:
        if row.result is not None:
            splits += [s for s in row.result.values.get("splits") or {} if s not in splits]
    splits = splits or ["easy", "medium", "hard"]
    judges: list[str | None] = list(block.judges) if len(block.judges) > 1 else [None]
    rows = [
        (
            row.label + (f" (n={row.seeds})" if row.seeds > 1 else ""),
            _method_cells(block, i, splits, judges),
        )
        for i, row in enumerate(block.rows)
        if row.result is not None
    ]
    baselines: dict[str, Any] | None = next(
        (
            row.result.values["baselines"]
            for row in block.rows
            if row.result is not None and row.result.values.get("baselines")
        ),
        None,
    )
    if baselines is None:  # validation results have none: the run's final test evaluation
        baselines = next(
            (
                ((r.run.summary or {}).get("final") or {})["baselines"]
                for r in block.rows
                if (((r.run.summary or {}).get("final") or {}).get("baselines"))
            ),
            {},
        )
    for key, label in BASELINE_LABELS.items():
        if key in baselines:
            rows.append((label, _row(baselines[key], splits, judges)))
    return splits, judges, rows


def _header(
    block: Block, splits: list[str], judges: list[str | None]
) -> tuple[list[str], list[str]]:
    letters = split_columns(splits)
    names = [j or (block.judges[0] if block.judges else "ACC") for j in judges]
    top = [n for n in names for _ in range(len(splits) + 1)] + ["PSNR", "SSIM"]
    sub = [c for _ in judges for c in [letters[s] for s in splits] + ["Avg"]] + ["Avg", "Avg"]
    return top, sub


def to_paper_markdown(report: Report) -> str:
    out: list[str] = []
    for block in report.blocks:
        splits, judges, rows = paper_rows(block)
        top, sub = _header(block, splits, judges)
        out += [f"### {block.title}", block.source_line() + " · ACC in %", ""]
        out.append("| Method | " + " | ".join(f"{t} {s}" for t, s in zip(top, sub)) + " |")
        out.append("|---|" + "---:|" * len(top))
        out += ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
        out.append("")
        from tsrx.report.render import tests_lines

        tests = tests_lines(block)
        if tests:
            out += [f"- {t}" for t in tests] + [""]
    from tsrx.report.render import pooled_lines

    pooled = pooled_lines(report)
    if pooled:
        out += [f"Pooled over the other axes: {report.row_axis}", ""]
        out += [f"- {t}" for t in pooled] + [""]
    for w in report.warnings:
        out += [f"> **warning:** {w}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _tex(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("{", r"\{"),
        ("}", r"\}"),
    ):
        text = text.replace(a, b) if a != "\\" else text.replace(a, "\x00")
    return text.replace("\x00", r"\textbackslash{}")


def _number(cell: str) -> float:
    """The value a printed cell shows (``56.0±0.4†`` -> 56.0)."""
    found = re.match(r"-?[0-9.]+|-?inf|nan", cell)
    return float(found.group(0)) if found else math.nan


def _tex_cell(cell: str) -> str:
    return cell.replace("±", "$\\pm$").replace(MARK, "$^\\dagger$")


def best_cells(rows: list[tuple[str, list[str]]], methods: int) -> set[tuple[int, int]]:
    """(row, column) of the best printed value of each column among the first ``methods``
    rows (the baselines, HR above all, never compete); higher is better for ACC, PSNR and
    SSIM. Ties all count, unless every method ties: then no value stands out."""
    best: set[tuple[int, int]] = set()
    width = max((len(cells) for _, cells in rows[:methods]), default=0)
    for c in range(width):
        vals = [(r, _number(rows[r][1][c])) for r in range(methods) if rows[r][1][c] != "-"]
        if len(vals) < 2 or len({v for _, v in vals}) == 1:
            continue
        top = max(v for _, v in vals)
        best |= {(r, c) for r, v in vals if v == top}
    return best


def to_latex(report: Report) -> str:
    """One ``table`` per block: caption (selector, protocol, judges, kind of values), the
    booktabs tabular, the best method value of each column in bold; warnings as comments."""
    out: list[str] = ["% tsrx report --format latex (needs \\usepackage{booktabs})"]
    out += ["% warning: " + w.replace("\n", "\n% ") for w in report.warnings]
    for b, block in enumerate(report.blocks):
        splits, judges, rows = paper_rows(block)
        top, sub = _header(block, splits, judges)
        per = len(splits) + 1
        methods = sum(1 for row in block.rows if row.result is not None)
        bold = best_cells(rows, methods)
        label = "tab:tsrx-" + "".join(ch if ch.isalnum() else "-" for ch in block.title).strip("-")
        out += [
            "",
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{_tex(block.title)}: {_tex(block.source_line())}. ACC in \\%; the best "
            "method value of each column in bold"
            + (
                "; $^\\dagger$ " + _tex(LEGEND.split(" ", 1)[1])
                if any(block.not_significant.values())
                else ""
            )
            + ".}",
            f"\\label{{{label}{'-' + str(b + 1) if len(report.blocks) > 1 else ''}}}",
            "\\begin{tabular}{l" + "c" * len(top) + "}",
            "\\toprule",
        ]
        groups = [
            f"\\multicolumn{{{per}}}{{c}}{{{_tex(top[i * per])}}}" for i in range(len(judges))
        ]
        out.append(" & ".join(["Method", *groups, "PSNR", "SSIM"]) + " \\\\")
        rules = " ".join(
            f"\\cmidrule(lr){{{2 + i * per}-{1 + (i + 1) * per}}}" for i in range(len(judges))
        )
        out.append(rules)
        out.append(" & ".join(["", *sub]) + " \\\\")
        out.append("\\midrule")
        for r, (name, cells) in enumerate(rows):
            if r == methods and r > 0:
                out.append("\\midrule")  # the baselines apart from the methods
            shown = [
                f"\\textbf{{{_tex_cell(v)}}}" if (r, c) in bold else _tex_cell(v)
                for c, v in enumerate(cells)
            ]
            out.append(" & ".join([_tex(name), *shown]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        from tsrx.report.render import tests_lines

        out += [f"% paired: {t}" for t in tests_lines(block)]
    from tsrx.report.render import pooled_lines

    out += [f"% pooled: {t}" for t in pooled_lines(report)]
    return "\n".join(out) + "\n"
