"""The evaluation result shown to a person: the rich table and the caption lines under it.

Apart from tsrx/engine/evaluator.py (which computes the result) because showing it is the
other job: ``tsrx eval``, ``tsrx ckpt compose`` and the end of ``tsrx train`` print a result
dict (docs/architecture.md, "Evaluation result") the same way, and an older result (one
unnamed judge, no precision) still prints. Nothing here imports torch.
"""

from __future__ import annotations

import math
from typing import Any, Literal


def _fmt(value: float | None, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def judges_of(result: dict[str, Any]) -> list[str]:
    """The judge names of a result, primary first (older results: one unnamed judge)."""
    names = list(result.get("judges") or {})
    if not names:
        for values in [*(result.get("splits") or {}).values(), result.get("average") or {}]:
            names += [n for n in (values.get("acc_by_judge") or {}) if n not in names]
    return names


def judge_acc(values: dict[str, Any], judge: str | None) -> float | None:
    """A split's (or the average's) accuracy under ``judge`` (None: the primary ``acc``)."""
    if judge is None:
        acc: float | None = values.get("acc")
    else:
        acc = (values.get("acc_by_judge") or {}).get(judge)
    return acc


def result_caption(result: dict[str, Any]) -> list[str]:
    """The lines printed under every table: the protocol, batch size and judges."""
    judges = result.get("judges") or {}
    who = (
        "judges: " + "; ".join(f"{n} = {d}" for n, d in judges.items())
        if judges
        else f"recognizer: {result.get('recognizer') or '-'}"
    )
    lines = [f"protocol {result['protocol']}, batch size {result['batch_size']}, {who}"]
    if result.get("precision", "fp32") != "fp32":  # older results: float32
        lines.append(f"precision {result['precision']}: the SR forward under autocast")
    if result.get("judge_precision", "fp32") != "fp32":
        lines.append(
            f"judge precision {result['judge_precision']}: the judges read under autocast "
            "(readings differ slightly from fp32's; onnxruntime judges read the same)"
        )
    return lines + list(result.get("notes") or [])


def result_table(result: dict[str, Any], title: str = "evaluation") -> Any:
    """One rich table: rows easy/medium/hard/A per row (model, bicubic, HR), columns ACC per
    judge, then PSNR and SSIM."""
    from rich.markup import escape
    from rich.table import Table

    judges = judges_of(result)
    acc_cols = (
        [(f"ACC {escape(j)}", j) for j in judges]
        if len(judges) > 1
        else [(f"ACC ({escape(judges[0])})" if judges else "ACC", None)]
    )
    table = Table(title=escape(title))
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("", "left"),
        ("split", "left"),
        *[(c, "right") for c, _ in acc_cols],
        ("PSNR", "right"),
        ("SSIM", "right"),
        ("n", "right"),
    )
    for col, justify in columns:
        table.add_column(col, justify=justify)
    named = [("model", result)] + [
        (name, res)
        for name, res in (result.get("baselines") or {}).items()
        # the HR row has only ACC: without a judge it would be a block of dashes
        if any(res["average"][m] is not None for m in ("acc", "psnr", "ssim"))
    ]
    for i, (name, res) in enumerate(named):
        if i:
            table.add_section()
        rows = list(res["splits"].items()) + [("A", res["average"])]
        for j, (split, v) in enumerate(rows):
            accs = [_fmt(judge_acc(v, judge), 4) for _, judge in acc_cols]
            table.add_row(
                name if j == 0 else "",
                split,
                *accs,
                _fmt(v["psnr"], 4),
                _fmt(v["ssim"], 4),
                str(v["n"]),
            )
    return table


def print_result(console: Any, result: dict[str, Any], title: str = "evaluation") -> None:
    """The table, then its caption lines unwrapped (paths stay copyable)."""
    console.print(result_table(result, title))
    for line in result_caption(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if result.get("nonfinite"):  # loud, and on stderr too when the table goes to a file
        from tsrx.console import err_console

        err_console.print(f"[bold red]{result['notes'][0]}[/]", highlight=False, soft_wrap=True)


__all__ = [
    "judges_of",
    "judge_acc",
    "result_caption",
    "result_table",
    "print_result",
]
