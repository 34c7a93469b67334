"""Paired tests inside a report block, from the rows' per-image records (tsrx.records).

For every ACC column (each split and A, each judge) the best row is compared with every other
ranked row on the same images (tsrx.report.stats.compare: exact McNemar for one run per side,
the seeds-then-images bootstrap when a row holds several seeds), the family of a column's
comparisons is Holm-corrected, and a best value whose adjusted p against the runner-up is
0.05 or more (or that ties it) is marked: it is the highest number, not a demonstrated win.
Rows without records (run directories from before tsrx kept them) stay in the table, out of
the tests, with a note.

A grid's question is often about the row axis as a whole ("does the uncertainty combiner beat
avg?"), not inside one block: ``pool_blocks`` compares the row values once more, pooled over
the blocks of a selector (every value of the other axes, e.g. the four heads), with the seeds
inside (tsrx.report.stats.compare_groups), Holm-corrected over the row values compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsrx.errors import TsrxError
from tsrx.records import Records, read_records
from tsrx.report.stats import Comparison, compare, compare_groups, holm
from tsrx.runfiles import CONFIG

MARK = "†"
LEGEND = (
    f"{MARK} best value, but not significantly better than the runner-up (paired test on the "
    "same images, Holm-corrected over the column's comparisons with the best, p >= 0.05)"
)
NO_RECORDS = (
    "no per-image records (evaluated before tsrx recorded them): left out of the paired tests"
)

_cache: dict[tuple[str, int, int], Records] = {}


def load(path: Path) -> Records:
    """Records of a file, read once per report (keyed by path, size and mtime)."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        _cache[key] = read_records(path)
    return _cache[key]


@dataclass
class Paired:
    """One comparison of a block: best row ``a`` against row ``b`` in ``column``."""

    column: str
    a: int
    b: int
    label_a: str
    label_b: str
    result: Comparison


def correctness(
    records: list[Records], split: str | None, judge: str | None, row: str = "model"
) -> tuple[list[np.ndarray], np.ndarray] | None:
    """Per-run correctness on ``split`` (None: every image) and the split codes (strata)."""
    out = []
    for rec in records:
        if split is not None and split not in rec.splits:
            return None
        correct = rec.correct(row, judge)
        if correct is None:
            return None
        mask = rec.in_split(split) if split is not None else np.ones(len(rec), bool)
        out.append(correct[mask])
    first = records[0]
    strata = first.split[first.in_split(split)] if split is not None else first.split
    return out, strata


def compare_block(block: Any, specs: dict[str, tuple[str, str | None, str | None]]) -> None:
    """Fill ``block.comparisons``, ``block.not_significant`` and ``block.test_notes`` of a
    ``tsrx.report.tables.Block`` (typed Any: tables imports this module)."""
    ranked = [i for i, r in enumerate(block.rows) if r.result is not None]
    if any(block.rows[i].result.source == "test" for i in ranked):
        ranked = [i for i in ranked if block.rows[i].result.source == "test"]
    records: dict[int, list[Records]] = {}  # rows with records for every seed
    for i in ranked:
        row = block.rows[i]
        paths = [res.records for res in (row.results or [row.result])]
        if any(p is None for p in paths):
            if NO_RECORDS not in row.notes:
                row.notes.append(NO_RECORDS)
            continue
        try:
            records[i] = [load(p) for p in paths]
        except TsrxError as exc:
            row.notes.append(f"per-image records unreadable: {exc}")
    usable = [i for i in ranked if records.get(i)]
    if len(usable) < 2:
        return
    reference = records[usable[0]][0]
    for i in usable[1:]:
        if not all(rec.same_images(reference) for rec in records[i]):
            block.test_notes.append(
                f"{block.rows[i].label} and {block.rows[usable[0]].label} were evaluated on "
                "different images: no paired test between them"
            )
            del records[i]
    usable = [i for i in usable if i in records]
    for col, (metric, split, judge) in specs.items():
        if metric != "acc" or col not in block.columns:
            continue
        values = [(i, block.rows[i].cells.get(col)) for i in ranked]
        values = [(i, round(v, 4)) for i, v in values if v is not None and not np.isnan(v)]
        if len(values) < 2 or len({v for _, v in values}) == 1:
            continue
        values.sort(key=lambda iv: -iv[1])
        top = values[0][1]
        tied = [i for i, v in values if v == top]
        if len(tied) > 1:
            block.not_significant[col] = set(tied)
        best = tied[0]
        if best not in usable:
            continue
        got = correctness(records[best], split, judge)
        if got is None:
            continue
        best_correct, strata = got
        found: list[Paired] = []
        for i, _ in values:
            if i == best or i not in usable:
                continue
            other = correctness(records[i], split, judge)
            if other is None:
                continue
            result = compare(best_correct, other[0], strata)
            found.append(Paired(col, best, i, block.rows[best].label, block.rows[i].label, result))
        for p, adjusted in zip(found, holm([p.result.p for p in found])):
            p.result.p_holm = adjusted
        block.comparisons[col] = found
        runner_up = next((i for i, v in values if v < top), None)
        against = next((p for p in found if p.b == runner_up), None)
        if len(tied) == 1 and against is not None and not against.result.significant:
            block.not_significant[col] = {best}


def describe(p: Paired) -> str:
    """One line: the difference, its interval, the test, the discordant counts, Holm's p."""
    c = p.result
    seeds = f" ({c.seeds_a} vs {c.seeds_b} seeds)" if max(c.seeds_a, c.seeds_b) > 1 else ""
    counts = (
        f", discordant {c.b:g} / {c.c:g}"
        if c.seeds_a == c.seeds_b == 1
        else f", discordant per seed pair {c.b:.1f} / {c.c:.1f}"
    )
    return (
        f"{p.column}: {p.label_a} - {p.label_b} = {c.diff:+.4f} "
        f"[{int(c.level * 100)}% CI {c.low:+.4f}, {c.high:+.4f}], {c.test} p = {_p(c.p)}"
        f"{counts}, Holm p = {_p(c.p_holm)}{seeds}, n = {c.n_images}"
    )


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


@dataclass
class Pooled:
    """Row value ``label_a`` (the best pooled) against ``label_b`` over the blocks of a selector."""

    selector: str
    column: str
    over: str  # what the pooling spans: "head: dense, mlp, sidernn, sidernn+mlp"
    groups: int
    label_a: str
    label_b: str
    result: Comparison


def _row_records(block: Any, label: str) -> list[Records] | None:
    """Every seed's records of the row ``label`` of ``block``; None when any is missing."""
    row = next((r for r in block.rows if r.label == label), None)
    if row is None or row.result is None:
        return None
    results = row.results or [row.result]
    if any(res.records is None for res in results):
        return None
    try:
        return [load(res.records) for res in results]
    except TsrxError:
        return None


def pool_blocks(
    blocks: list[Any], specs: dict[str, tuple[str, str | None, str | None]]
) -> tuple[list[Pooled], list[str]]:
    """Pooled comparisons of the row values over ``blocks`` (one selector's, two or more), for
    each A column of accuracy; and notes on what could not be pooled and why."""
    if len(blocks) < 2:
        return [], []
    labels = [r.label for r in blocks[0].rows]
    labels = [lab for lab in labels if all(lab in [r.label for r in b.rows] for b in blocks)]
    if len(labels) < 2:
        return [], []
    selector = blocks[0].selector
    records: dict[str, list[list[Records]]] = {}
    notes = []
    for lab in labels:
        got = [_row_records(b, lab) for b in blocks]
        if any(g is None for g in got):
            where = ", ".join(b.title for b, g in zip(blocks, got) if g is None)
            notes.append(
                f"{lab}: no result with per-image records in {where}: left out of the pooled test"
            )
            continue
        records[lab] = [g for g in got if g is not None]
    sources = {r.result.source for b in blocks for r in b.rows if r.label in records and r.result}
    if len(sources) > 1:
        notes.append(f"{selector}: test and validation results mixed: no pooled test")
        return [], notes
    if len(records) < 2:
        return [], notes
    reference = next(iter(records.values()))[0][0]
    if not all(rec.same_images(reference) for g in records.values() for s in g for rec in s):
        notes.append(f"{selector}: the blocks were evaluated on different images: no pooled test")
        return [], notes
    keys = list(blocks[0].group)
    over = "; ".join(f"{k}: {', '.join(dict.fromkeys(b.group[k] for b in blocks))}" for k in keys)
    out: list[Pooled] = []
    for col, (metric, split, judge) in specs.items():
        if metric != "acc" or split is not None or col not in blocks[0].columns:
            continue
        correct: dict[str, list[list[np.ndarray]]] = {}
        strata = None
        for lab, groups in records.items():
            per_group = [correctness(g, None, judge) for g in groups]
            if any(x is None for x in per_group):
                break
            correct[lab] = [x[0] for x in per_group if x is not None]
            strata = next(x[1] for x in per_group if x is not None)
        else:
            pooled = {
                lab: float(np.mean([np.mean([c.mean() for c in g]) for g in groups]))
                for lab, groups in correct.items()
            }
            order = sorted(correct, key=lambda lab: -pooled[lab])
            best = order[0]
            found = [
                Pooled(
                    selector,
                    col,
                    over,
                    len(blocks),
                    best,
                    lab,
                    compare_groups(correct[best], correct[lab], strata),
                )
                for lab in order[1:]
            ]
            for p, adjusted in zip(found, holm([p.result.p for p in found])):
                p.result.p_holm = adjusted
            out += found
    return out, notes


def describe_pooled(p: Pooled) -> str:
    """One line: the pooled difference, its interval, the bootstrap p, Holm's p, what it spans."""
    c = p.result
    return (
        f"{p.selector} {p.column}, pooled over {p.over} ({p.groups} groups; "
        f"{c.seeds_a} vs {c.seeds_b} runs): {p.label_a} - {p.label_b} = {c.diff:+.4f} "
        f"[{int(c.level * 100)}% CI {c.low:+.4f}, {c.high:+.4f}], {c.test} p = {_p(c.p)}, "
        f"Holm p = {_p(c.p_holm)}, discordant per run pair {c.b:.1f} / {c.c:.1f}, "
        f"n = {c.n_images}"
    )


# -- tsrx diff: two sides -----------------------------------------------------------------------
BASELINE_SIDES = ("bicubic", "hr")


@dataclass
class Side:
    """One side of ``tsrx diff``: the records of an evaluation and the row kind compared."""

    what: str
    records: Records | None
    row: str = "model"
    why: str = ""


def resolve_side(spec: str, selector: str | None = None) -> Side:
    """``bicubic`` / ``hr`` (the other side's baseline rows), a records file, a result JSON,
    a run directory (its ``selector``'s result: cached test, else validation) or a checkpoint
    inside one."""
    from tsrx.report.collect import Selected, is_run_dir, read_run
    from tsrx.runfiles import records_beside

    if spec in BASELINE_SIDES:
        return Side(spec, None, row=spec)
    path = Path(spec)
    if not path.exists():
        raise TsrxError(
            f"{spec}: no such run directory, checkpoint, result JSON or records file "
            f"(or a baseline: {', '.join(BASELINE_SIDES)})"
        )
    if path.suffix == ".npz":
        return Side(str(path), load(path))
    if path.suffix == ".json":
        rec = records_beside(path)
        if rec.is_file():
            return Side(str(path), load(rec))
        return Side(str(path), None, why=f"no per-image records beside it ({rec.name})")
    if path.name == CONFIG:
        path = path.parent
    run_dir = path if path.is_dir() else path.parent
    if not is_run_dir(run_dir):
        return Side(str(path), None, why="not inside a run directory: no recorded evaluation")
    run = read_run(run_dir)
    sels = run.selectors()
    if path.is_file():  # a checkpoint: its selector
        sel = next((s for s in sels if s.filename == path.name), Selected(path.stem, path.name))
    else:
        wanted = [s for s in sels if selector in (None, s.name, s.filename, s.stem)]
        if not wanted:
            names = ", ".join(s.name for s in sels) or "(none)"
            raise TsrxError(f"{run_dir}: no selector {selector!r}; recorded: {names}")
        sel = wanted[0]
    res, why = run.result(sel)
    where = f"{run_dir} [{sel.filename}]"
    if res is None:
        return Side(where, None, why=why or "no result recorded")
    what = f"{where}: {'test' if res.source == 'test' else 'validation'} result {res.where}"
    if res.records is None:
        return Side(what, None, why=NO_RECORDS)
    return Side(what, load(res.records))


def paired_table(a: Side, b: Side, *, n_boot: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """Per judge (both sides have) and split, then all images: accuracies, A - B with its
    interval, the exact McNemar p and the discordant counts. Baseline sides take the other
    side's records."""
    if a.records is None and b.records is None:
        raise TsrxError("tsrx diff: neither side has per-image records to compare")
    if a.row != "model" and a.records is None:
        a = Side(a.what, b.records, a.row)
    if b.row != "model" and b.records is None:
        b = Side(b.what, a.records, b.row)
    for side in (a, b):
        if side.records is None:
            raise TsrxError(f"tsrx diff: {side.what}: {side.why}")
        if side.row not in side.records.rows:
            raise TsrxError(
                f"tsrx diff: {side.what}: no {side.row} row recorded (evaluate with --baselines, "
                "or [eval] baselines = true)"
            )
    ra, rb = a.records, b.records
    assert ra is not None and rb is not None  # checked just above
    if not ra.same_images(rb):
        raise TsrxError(
            f"tsrx diff: {a.what} and {b.what} were evaluated on different images "
            "(splits or LMDB indexes differ): a paired comparison needs the same images"
        )
    judges = [j for j in ra.judges if j in rb.judges]
    if not judges:
        raise TsrxError(
            f"tsrx diff: no judge in common ({', '.join(ra.judges)} vs {', '.join(rb.judges)})"
        )
    out = []
    for judge in judges:
        for split in [*ra.splits, None]:
            ca = correctness([ra], split, judge, a.row)
            cb = correctness([rb], split, judge, b.row)
            if ca is None or cb is None:
                continue
            c = compare(ca[0], cb[0], ca[1], n_boot=n_boot, seed=seed)
            out.append({"judge": judge, "split": split or "all", **c.as_dict()})
    return out
