"""The notebook's tables, built from recorded results.

One block per checkpoint selector and per combination of the non-row grid axes
(``best_acc_model.pth``, ``combiner=avg``), rows for the chosen axis (``dense``, ``mlp``,
``sidernn``, ``sidernn+mlp``), columns E/M/H/A for ACC, PSNR and SSIM. The A columns
are always recomputed from the splits weighted by their sample counts; a stored average
that disagrees is flagged, since that is how a hand-copied table betrays itself.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tsrx.errors import TsrxError, suggest
from tsrx.report.collect import Collection, Result, Run, Selected, axis_label, value_label
from tsrx.report.diff import differences
from tsrx.report.run_facts import LEAD, TRAIL, run_facts

if TYPE_CHECKING:
    from tsrx.report.paired import Paired, Pooled

METRICS = ("acc", "psnr", "ssim")
# Half a unit in the fourth decimal, the precision tables show: a stored average further
# than this from the recomputed one would print differently, so it is a real disagreement.
AVERAGE_TOLERANCE = 5e-5
RUN_AXIS = "run"
SEED_AXIS = "seed"  # runs that differ only in it are one row: mean ± sd over the seeds


@dataclass
class Row:
    label: str
    run: Run
    result: Result | None
    cells: dict[str, float | None]
    notes: list[str] = field(default_factory=list)
    mismatched: set[str] = field(default_factory=set)  # columns whose stored average disagrees
    facts: dict[str, float | None] = field(default_factory=dict)  # params, samples/s (run_facts)
    # several seeds in one row: every run and result, the standard deviation of each column
    runs: list[Run] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    spread: dict[str, float | None] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        """How many results (one per seed) the row's values are the mean of."""
        return len(self.results) if self.results else int(self.result is not None)

    def state_label(self) -> str | None:
        """None when every run of the row completed, else what is not (``2 of 3 seeds ...``)."""
        runs = self.runs or [self.run]
        done = [r for r in runs if r.state == "completed"]
        if len(done) == len(runs):
            return None
        if len(runs) == 1:
            return runs[0].state_note()
        others = "; ".join(
            f"{r.point.get(SEED_AXIS, r.name)}: {r.state_note()}"
            for r in runs
            if r.state != "completed"
        )
        return f"{len(done)} of {len(runs)} seeds completed; {others}"


@dataclass
class Block:
    selector: str  # checkpoint file, e.g. best_acc_model.pth
    group: dict[str, str]  # other axes' labels -> values
    row_axis: str
    columns: list[str]
    rows: list[Row]
    protocol: str
    recognizer: str
    source: str  # "test", "val", "mixed" or "none"
    judges: list[str] = field(default_factory=list)  # judge names, primary first
    lead: list[str] = field(default_factory=list)  # fact columns before the metrics (params)
    trail: list[str] = field(default_factory=list)  # fact columns after them (samples/s)
    val_on_test: bool = False  # every validation value of the block is on the test splits
    seed_axis: bool = False  # rows aggregate the runs of several seeds
    # paired tests (tsrx.report.paired): ACC column -> comparisons of its best row with the
    # others; the best rows not significantly better than the runner-up; notes on what is missing
    comparisons: dict[str, list[Paired]] = field(default_factory=dict)
    not_significant: dict[str, set[int]] = field(default_factory=dict)
    test_notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        g = ", ".join(f"{k}={v}" for k, v in self.group.items())
        return f"{self.selector}" + (f" · {g}" if g else "")

    def best(self) -> dict[str, set[int]]:
        """Column -> indexes of the rows holding its best value (highest; ties all count,
        unless every ranked row ties: a column of 0.0000 has no best).

        Validation values never compete with test values: with any test result in the
        block, only test rows are ranked.
        """
        out: dict[str, set[int]] = {}
        sources = {i: r.result.source for i, r in enumerate(self.rows) if r.result is not None}
        ranked = list(sources)
        if "test" in sources.values():
            ranked = [i for i in ranked if sources[i] == "test"]
        for col in self.columns:
            cells = [(i, self.rows[i].cells.get(col)) for i in ranked]
            vals = [(i, round(v, 4)) for i, v in cells if v is not None and not math.isnan(v)]
            if len(vals) > 1 and len({v for _, v in vals}) > 1:
                top = max(v for _, v in vals)
                out[col] = {i for i, v in vals if v == top}
        return out

    def source_line(self) -> str:
        what = {
            "test": "test results (eval/ cache)",
            "val": (
                "test-split results recorded at validation (summary.json): the validation "
                "splits ARE the test splits, so the selector chose these checkpoints on them"
                if self.val_on_test
                else "VALIDATION results of the selector (summary.json), not test results"
            ),
            "mixed": "mixed: test results where cached, else validation (see notes)",
            "none": "no results recorded yet",
        }[self.source]
        who = "judges" if len(self.judges) > 1 else "recognizer"
        return f"protocol: {self.protocol} · {who}: {self.recognizer} · values: {what}"


@dataclass
class Report:
    source: str
    row_axis: str
    blocks: list[Block]
    warnings: list[str]
    problems: list[str]
    # the row values compared once more, pooled over each selector's blocks (paired.pool_blocks)
    pooled: list[Pooled] = field(default_factory=list)
    pooled_notes: list[str] = field(default_factory=list)


# E, M and H read as TextZoom's splits: another split with one of these initials (data.holdout's
# "holdout") keeps its full name
TEXTZOOM_LETTERS = {"E": "easy", "M": "medium", "H": "hard"}


def split_columns(splits: list[str]) -> dict[str, str]:
    """Split name -> column letter: easy -> E; names whose initials clash (with each other, with
    A for the average, or with E/M/H of another name than TextZoom's) keep their full name."""
    initials = [s[:1].upper() for s in splits]

    def letter(s: str) -> str:
        i = s[:1].upper()
        if initials.count(i) != 1 or i == "A" or TEXTZOOM_LETTERS.get(i, s.lower()) != s.lower():
            return s
        return i

    return {s: letter(s) for s in splits}


def metric_keys(judges: list[str]) -> list[tuple[str, str | None, str]]:
    """(metric, judge, column suffix): ACC once per judge when there are several (``ACC:crnn``),
    else plain ``ACC``; then PSNR and SSIM, once."""
    accs: list[tuple[str, str | None, str]] = (
        [("acc", j, f"ACC:{j}") for j in judges] if len(judges) > 1 else [("acc", None, "ACC")]
    )
    return accs + [("psnr", None, "PSNR"), ("ssim", None, "SSIM")]


def column_specs(
    splits: list[str], judges: list[str] | None = None
) -> dict[str, tuple[str, str | None, str | None]]:
    """Column -> (metric, split or None for A, judge or None for the primary)."""
    letters = split_columns(splits)
    return {
        f"{letters[s]}-{suffix}" if s else f"A-{suffix}": (m, s, j)
        for m, j, suffix in metric_keys(judges or [])
        for s in [*splits, None]
    }


def columns_for(splits: list[str], judges: list[str] | None = None) -> list[str]:
    letters = split_columns(splits)
    return [
        c
        for _, _, suffix in metric_keys(judges or [])
        for c in [f"{letters[s]}-{suffix}" for s in splits] + [f"A-{suffix}"]
    ]


def metric_value(values: dict[str, Any], metric: str, judge: str | None = None) -> float | None:
    """A split's (or the average's) value; ``judge`` reads ``acc_by_judge`` (absent: None)."""
    if judge is not None:
        v = (values.get("acc_by_judge") or {}).get(judge)
    else:
        v = values.get(metric)
    return None if v is None else float(v)


def recomputed_average(
    result: dict[str, Any], metric: str, judge: str | None = None
) -> float | None:
    """Sample-weighted mean over the splits; None when any split lacks the metric or its n."""
    splits = result.get("splits") or {}
    total, weight = 0.0, 0
    for values in splits.values():
        v, n = metric_value(values or {}, metric, judge), (values or {}).get("n")
        if v is None or n is None or math.isnan(v):
            return None
        total += float(v) * int(n)
        weight += int(n)
    return total / weight if weight else None


def result_judges(result: dict[str, Any]) -> list[str]:
    """Judge names of a result, primary first; [] for results from before named judges."""
    names = list(result.get("judges") or {})
    for values in [*(result.get("splits") or {}).values(), result.get("average") or {}]:
        names += [n for n in ((values or {}).get("acc_by_judge") or {}) if n not in names]
    return names


def _cells(
    result: dict[str, Any], splits: list[str], judges: list[str] | None = None
) -> tuple[dict[str, float | None], list[str], set[str]]:
    letters = split_columns(splits)
    cells: dict[str, float | None] = {}
    notes: list[str] = []
    bad: set[str] = set()
    rsplits = result.get("splits") or {}
    for m, judge, suffix in metric_keys(judges or []):
        for s in splits:
            cells[f"{letters[s]}-{suffix}"] = metric_value(rsplits.get(s) or {}, m, judge)
        avg = recomputed_average(result, m, judge)
        col = f"A-{suffix}"
        cells[col] = avg
        stored = metric_value(result.get("average") or {}, m, judge)
        if avg is not None and stored is not None and abs(float(stored) - avg) > AVERAGE_TOLERANCE:
            ns = "/".join(str((rsplits.get(s) or {}).get("n")) for s in splits)
            notes.append(
                f"{col}: stored average {float(stored):.4f} != {avg:.4f} recomputed "
                f"from the splits weighted by n = {ns}"
            )
            bad.add(col)
    return cells, notes, bad


def resolve_axis(requested: str | None, axes: list[str]) -> str:
    """A grid key from ``--rows``: the dotted key or its short label; default the first axis."""
    if not axes:
        return RUN_AXIS
    if requested is None:
        return axes[0]
    if requested == RUN_AXIS or requested in axes:
        return requested
    labels = {axis_label(a, axes): a for a in axes}
    if requested in labels:
        return labels[requested]
    raise TsrxError(
        f"--rows {requested!r}: not a grid axis of these runs{suggest(requested, list(labels))}; "
        f"axes: {', '.join(f'{label} ({a})' for label, a in labels.items())}, or 'run'"
    )


def _splits_of(results: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in results:
        for s in r.get("splits") or {}:
            if s not in out:
                out.append(s)
    return out or ["easy", "medium", "hard"]


def _rank(value: str, order: list[str]) -> tuple[int, str]:
    """Grid order for values the experiment declares, then alphabetical."""
    return (order.index(value), "") if value in order else (len(order), value)


def _ordered(values: list[str], order: list[str]) -> list[str]:
    known = [v for v in order if v in values]
    return known + sorted(v for v in values if v not in known)


def selectors_of(runs: list[Run], wanted: list[str] | None) -> list[Selected]:
    all_sel: dict[str, Selected] = {}
    for r in runs:
        for s in r.selectors():
            all_sel.setdefault(s.filename, s)
    if not wanted:
        return list(all_sel.values())
    out: list[Selected] = []
    for w in wanted:
        hits = [s for s in all_sel.values() if w in (s.name, s.filename, s.stem)]
        if not hits:
            names = [s.name for s in all_sel.values()]
            raise TsrxError(
                f"--selector {w!r}: no run records it{suggest(w, names)}; recorded: "
                f"{', '.join(f'{s.name} ({s.filename})' for s in all_sel.values()) or '(none)'}"
            )
        out.extend(h for h in hits if h not in out)
    return out


def follows(axis: str, row_axis: str, runs: list[Run]) -> bool:
    """True when each row value comes with one value of ``axis`` (a variant's ``data.mask``
    set with its backbone): such an axis is a property of the row, not a group of its own."""
    if row_axis == RUN_AXIS:
        return False
    seen: dict[str, str] = {}
    for r in runs:
        row, value = value_label(r.point.get(row_axis)), value_label(r.point.get(axis))
        if seen.setdefault(row, value) != value:
            return False
    return True


def build_report(
    coll: Collection,
    rows: str | None = None,
    selectors: list[str] | None = None,
    paired: bool = True,
) -> Report:
    """The report's blocks; ``paired``: paired tests from per-image records (tsrx.report.paired)."""
    row_axis = resolve_axis(rows, coll.axes)
    seed_axis = SEED_AXIS if SEED_AXIS in coll.axes and row_axis != SEED_AXIS else None
    others = [
        a
        for a in coll.axes
        if a not in (row_axis, seed_axis) and not follows(a, row_axis, coll.runs)
    ]
    labels = {a: axis_label(a, coll.axes) for a in coll.axes}
    sels = selectors_of(coll.runs, selectors)
    blocks: list[Block] = []
    facts = {id(r): run_facts(r.metrics()) for r in coll.runs}
    problems = [p for r in coll.runs for p in r.problems]  # metrics() notes damaged lines
    shown = [c for c in (*LEAD, *TRAIL) if any(f.get(c) is not None for f in facts.values())]
    pooled: list[Pooled] = []
    pooled_notes: list[str] = []
    for sel in sels:
        first_block = len(blocks)
        results = {id(r): r.result(sel) for r in coll.runs}
        splits = _splits_of([res.values for res, _ in results.values() if res is not None])
        judges: list[str] = []
        for res, _ in results.values():
            if res is not None:
                judges += [j for j in result_judges(res.values) if j not in judges]
        groups: dict[tuple[Any, ...], list[Run]] = {}
        for r in coll.runs:
            key = tuple(value_label(r.point.get(a)) for a in others)
            groups.setdefault(key, []).append(r)
        group_keys = sorted(
            groups, key=lambda k: [_rank(v, coll.value_order.get(a, [])) for a, v in zip(others, k)]
        )
        for gk in group_keys:
            members = groups[gk]
            if row_axis == RUN_AXIS:
                members = sorted(members, key=lambda r: r.name)
            else:
                order = _ordered(
                    sorted({value_label(r.point.get(row_axis)) for r in members}),
                    coll.value_order.get(row_axis, []),
                )
                members = sorted(
                    members, key=lambda r: (order.index(value_label(r.point.get(row_axis))), r.name)
                )
            block_rows = []
            for r in members:
                res, why = results[id(r)]
                label = r.name if row_axis == RUN_AXIS else value_label(r.point.get(row_axis))
                if (
                    sum(
                        1
                        for m in members
                        if m.point.get(row_axis) == r.point.get(row_axis)
                        and m.point.get(SEED_AXIS) == r.point.get(SEED_AXIS)
                    )
                    > 1
                    and row_axis != RUN_AXIS
                ):
                    label = f"{label} ({r.path.name})"
                cells: dict[str, float | None]
                extra: list[str]
                bad: set[str]
                if res is None:
                    cells, extra, bad = (
                        {},
                        [why or "no result recorded"] if r.state == "completed" else [],
                        set(),
                    )
                else:
                    cells, extra, bad = _cells(res.values, splits, judges)
                    if res.source == "val":
                        extra.insert(
                            0,
                            "validation result on the test splits (no test result cached)"
                            if res.on_test_splits
                            else "validation result (no test result cached)",
                        )
                    if not res.verified:
                        extra.insert(0, "test result not verified (checkpoint file absent)")
                if (r.summary or {}).get("synthetic_data"):
                    extra.insert(0, "SYNTHETIC data (data.synth), not TextZoom")
                block_rows.append(Row(label, r, res, cells, extra, bad, facts=facts[id(r)]))
            if seed_axis:
                block_rows = _merge_seeds(block_rows)
            # every seed's result, not only a merged row's first: one seed's validation result
            # among test results makes the block "mixed", as it would unmerged
            present = [
                res
                for row in block_rows
                for res in (row.results or ([row.result] if row.result is not None else []))
            ]
            sources = {p.source for p in present}
            source = "none" if not sources else (sources.pop() if len(sources) == 1 else "mixed")
            protocol = _common([_protocol(p.values) for p in present])
            recognizer = _common([_judges_text(p.values) for p in present])
            blocks.append(
                Block(
                    sel.filename,
                    {labels[a]: v for a, v in zip(others, gk)},
                    labels.get(row_axis, RUN_AXIS),
                    columns_for(splits, judges),
                    block_rows,
                    protocol,
                    recognizer,
                    source,
                    judges,
                    lead=[c for c in LEAD if c in shown],
                    trail=[c for c in TRAIL if c in shown],
                    val_on_test=any(p.source == "val" for p in present)
                    and all(p.on_test_splits for p in present if p.source == "val"),
                    seed_axis=seed_axis is not None,
                )
            )
            if paired:
                from tsrx.report.paired import compare_block

                compare_block(blocks[-1], column_specs(splits, judges))
        if paired and row_axis != RUN_AXIS:
            from tsrx.report.paired import pool_blocks

            found, notes = pool_blocks(blocks[first_block:], column_specs(splits, judges))
            pooled += found
            pooled_notes += notes
    return Report(
        coll.source,
        labels.get(row_axis, RUN_AXIS),
        blocks,
        identical_metric_warnings(coll.runs, sels),
        problems,
        pooled,
        pooled_notes,
    )


def _merge_seeds(rows: list[Row]) -> list[Row]:
    """Rows of one label (runs that differ only in the seed) become one: each column's mean
    over the seeds that have it, its sample standard deviation, every run and result kept."""
    merged: dict[str, list[Row]] = {}
    for row in rows:
        merged.setdefault(row.label, []).append(row)
    out = []
    for label, same in merged.items():
        with_result = [r for r in same if r.result is not None]
        cells: dict[str, float | None] = {}
        spread: dict[str, float | None] = {}
        for col in {c for r in with_result for c in r.cells}:
            values = [
                v for r in with_result if (v := r.cells.get(col)) is not None and not math.isnan(v)
            ]
            if values:
                from tsrx.report.stats import mean_std

                cells[col], spread[col] = mean_std(values)
            else:
                cells[col], spread[col] = None, None
        notes = [
            f"seed {r.run.point.get(SEED_AXIS, '?')}: {n}" if len(same) > 1 else n
            for r in same
            for n in r.notes
        ]
        facts: dict[str, float | None] = {}
        for key in {k for r in same for k in r.facts}:
            vals = [v for r in same if (v := r.facts.get(key)) is not None]
            facts[key] = sum(vals) / len(vals) if vals else None
        first = with_result[0] if with_result else same[0]
        out.append(
            Row(
                label,
                first.run,
                first.result,
                cells,
                list(dict.fromkeys(notes)),
                set().union(*(r.mismatched for r in same)),
                facts,
                runs=[r.run for r in same],
                results=[res for r in with_result if (res := r.result) is not None],
                spread=spread,
            )
        )
    return out


def _judges_text(result: dict[str, Any]) -> str:
    judges = result.get("judges") or {}
    if judges:
        return "; ".join(f"{n} = {d}" for n, d in judges.items())
    return str(result.get("recognizer") or "none")


def _protocol(result: dict[str, Any]) -> str:
    p = str(result.get("protocol") or "unknown")
    bs = result.get("batch_size")
    return f"{p} (batch {bs})" if bs is not None and p == "textzoom" else p


def _common(values: list[str]) -> str:
    uniq = list(dict.fromkeys(values))
    if not uniq:
        return "-"
    return uniq[0] if len(uniq) == 1 else "MIXED: " + " | ".join(uniq)


def _fingerprint(result: dict[str, Any]) -> tuple[Any, ...] | None:
    vals = []
    for s, values in sorted((result.get("splits") or {}).items()):
        for m in METRICS:
            v = (values or {}).get(m)
            vals.append((s, m, None if v is None else round(float(v), 4)))
        for j, v in sorted(((values or {}).get("acc_by_judge") or {}).items()):
            vals.append((s, f"acc:{j}", None if v is None else round(float(v), 4)))
    return tuple(vals) if any(v is not None for *_, v in vals) else None


def identical_metric_warnings(runs: list[Run], sels: list[Selected]) -> list[str]:
    """Runs whose configs differ but whose results agree to four decimals: a switch that did nothing?"""
    out = []
    for sel in sels:
        seen: dict[tuple[Any, ...], list[tuple[Run, dict[str, Any]]]] = {}
        for r in runs:
            res, _ = r.result(sel)
            if res is None or r.config is None:
                continue
            fp = _fingerprint(res.values)
            if fp is not None:
                seen.setdefault((res.source, fp), []).append((r, r.config))
        for (source, _), same in seen.items():
            for i, (a, a_config) in enumerate(same):
                for b, b_config in same[i + 1 :]:
                    diffs = differences(a_config, b_config, ignore=("name",))
                    if not diffs:
                        continue
                    shown = "; ".join(f"{k}: {_v(x)} vs {_v(y)}" for k, x, y in diffs[:6])
                    more = f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else ""
                    out.append(
                        f"identical {source} metrics for {sel.filename} (every split, 4 decimals) "
                        f"from runs that differ in config: {a.name} and {b.name} differ in "
                        f"{shown}{more}. Did a setting silently not take effect, or does the "
                        "checkpoint predate the first update? Compare with "
                        f"`tsrx diff {shlex.quote(str(a.path))} {shlex.quote(str(b.path))}`."
                    )
    return out


def _v(x: Any) -> str:
    from tsrx.report.diff import short

    return short(x, 40)
