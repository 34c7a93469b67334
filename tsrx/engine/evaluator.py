"""Evaluation of a model on named splits: ACC, PSNR, SSIM per split and their average.

The metric conventions live in ``tsrx.engine.metrics``. Here: which images are
compared and who reads them. PSNR/SSIM compare the model's SR output with HR, once.
ACC is measured by every judge (tsrx.engine.judges: the model's own recognizer, named
``own``, then the configured judges), each reading the same SR batch; without a judge,
ACC is None, never a number from an untrained recognizer. The evaluator never decodes:
judges do (``Judge.read``).

Under DDP each rank evaluates every ``world_size``-th batch of the fixed batch order
and the metric sums are all_reduced once per evaluation: every rank reaches that one
collective, whatever its share, and the ``textzoom`` protocol's per-batch averages
equal the single-process numbers because the batches are the same.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from tsrx.engine import distributed as dist_utils
from tsrx.engine.config import EvalSection
from tsrx.engine.eval_batches import bicubic_baseline, evaluation_batches
from tsrx.engine.judges import Judge, describe, own_judge
from tsrx.engine.metrics import (
    FIELDS,
    PROTOCOLS,
    MetricAccumulator,
    Protocol,
    psnr_per_image,
    ssim_per_image,
    weighted_average,
)
from tsrx.engine.precision import as_float32, autocast, check_precision
from tsrx.errors import TsrxError
from tsrx.models.text import ctc_greedy_decode, normalize_for_accuracy
from tsrx.records import RecordCollector, Records

if TYPE_CHECKING:
    from tsrx.contracts import CTCRecognizer

log = logging.getLogger("tsrx.eval")

TEXTZOOM_TEST_SPLITS = ("easy", "medium", "hard")
EVAL_DEFAULTS = EvalSection()  # [eval]'s defaults, written once in tsrx.engine.config

# A trained recognizer reads most HR images of any scene-text test set (CRNN on TextZoom's HR:
# about 0.7); one reading fewer than this share of HR images is broken, not weak.
SANE_HR_ACC = 0.05
HR_PROBE_MIN = 20  # images: fewer say nothing about a judge

NO_JUDGE_HINT = (
    "ACC needs a recognizer with trained weights: pass --judge ppocr (installed with "
    "tsrx's judge extra), --judge crnn=crnn.pth, or set [eval.judges]"
)


def _own_predictions(
    model: nn.Module,
    judge: Judge,
    out: dict[str, Any],
    batch: dict[str, Any],
    sr: torch.Tensor | None,
) -> list[str] | None:
    """The model's own recognizer on what it reads (its ``rec_input``): the logits the forward
    pass already computed when it is a CTC recognizer, else ``recognize``."""
    logits = out.get("logits")
    if logits is not None and getattr(judge.recognizer, "ctc", True):
        # a CTC recognizer: its alphabet is checked by tsrx.contracts.check_recognizer
        return ctc_greedy_decode(logits, cast("CTCRecognizer", judge.recognizer).alphabet)
    source = getattr(model, "rec_input", "sr")
    images = sr if source == "sr" else batch.get(source)
    return judge.read(images) if images is not None else None


def _lmdb_index(dataset: Any, position: int) -> int:
    if hasattr(dataset, "lmdb_index"):
        return int(dataset.lmdb_index(position)[1])
    return position + 1


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    datasets: dict[str, Any],
    protocol: Protocol = EVAL_DEFAULTS.protocol,
    batch_size: int = EVAL_DEFAULTS.batch_size,
    device: torch.device | str | None = None,
    baselines: bool = EVAL_DEFAULTS.baselines,
    with_predictions: bool = True,
    env: dist_utils.DistEnv | None = None,
    judges: list[Judge] | None = None,
    records: bool = False,
    precision: str = EVAL_DEFAULTS.precision,
    reading_store: bool = EVAL_DEFAULTS.reading_store,
    judge_precision: str = EVAL_DEFAULTS.judge_precision,
) -> dict[str, Any]:
    """The evaluation result of docs/architecture.md for ``model`` on ``datasets``.

    ``judges`` (tsrx.engine.judge_build.build_judges: the model's own recognizer first, then
    the named judges) all read the same SR batch: the model runs once per batch. The first
    judge is the primary one (``acc``); every judge's accuracy is in ``acc_by_judge``.
    Without ``judges``, the model's own recognizer (if any) judges.
    ``baselines`` adds the bicubic and HR rows, read by every judge; ``env`` shards batches
    over DDP ranks (all ranks must call). ``records``: the per-image records
    (tsrx.records) under ``result["records"]``, a :class:`Records` that the caller takes out
    with :func:`take_records` before the result is written as JSON. ``precision``: the model's
    forward (tsrx.engine.precision; ``eval.precision``); its output goes on in float32.
    ``judge_precision``: what every judge reads in (``eval.judge_precision``; the result
    records it). ``reading_store``: frozen judges take what
    they read before, in any process, from the reading store (tsrx/engine/reading_store.py)
    and keep their bicubic and HR readings there; the new ones are written when the
    evaluation ends (also one that failed) and the log says how many came from it.
    """
    from tsrx.engine import reading_store as store

    env = env or dist_utils.DistEnv()
    if judges is None:
        judges = [j for j in [own_judge(model)] if j is not None]
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise TsrxError(f"evaluation: judge names must be unique, got {', '.join(names)}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    check_precision(precision, device, "eval.precision")
    check_precision(judge_precision, device, "eval.judge_precision")
    for j in judges:
        j.precision = judge_precision
    rows = ["model"] + (["bicubic", "hr"] if baselines else [])
    splits = list(datasets)
    images = {row: MetricAccumulator(protocol, splits) for row in ("model", "bicubic")}
    reads = {(row, j.name): MetricAccumulator(protocol, splits) for row in rows for j in judges}
    predictions: dict[str, list[dict[str, Any]]] = {name: [] for name in datasets}
    collector = RecordCollector(splits, names) if records else None
    was_training = model.training
    model.eval()
    tallies = [dict(j.tally) for j in judges]
    try:
        with store.turned_off(not reading_store):
            store.refresh_all()  # what other processes (a study's runs) stored meanwhile
            for split, dataset in datasets.items():
                for batch in evaluation_batches(dataset, batch_size, env):
                    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                    with autocast(precision, device, "eval.precision"):
                        out = model(batch)  # once per batch, whatever the number of judges
                    out = as_float32(out)
                    sr = out.get("sr")
                    labels = batch["label"]
                    if sr is not None:
                        images["model"].update(split, sr, batch["hr"])
                    texts: dict[str, list[str]] = {}
                    for j in judges:
                        preds = (
                            _own_predictions(model, j, out, batch, sr)
                            if j.own
                            else j.read(sr)
                            if sr is not None
                            else None
                        )
                        if preds is not None:
                            texts[j.name] = preds
                            reads[("model", j.name)].update(split, None, None, preds, labels)
                    row_texts: dict[str, dict[str, list[str]]] = {"model": texts}
                    if baselines:
                        up = bicubic_baseline(batch)
                        images["bicubic"].update(split, up, batch["hr"])
                        row_texts["bicubic"], row_texts["hr"] = {}, {}
                        for j in judges:
                            up_read = j.read(up, persist=True)
                            hr_read = j.read(batch["hr"], persist=True)
                            row_texts["bicubic"][j.name], row_texts["hr"][j.name] = up_read, hr_read
                            reads[("bicubic", j.name)].update(split, None, None, up_read, labels)
                            reads[("hr", j.name)].update(split, None, None, hr_read, labels)
                    if collector is not None:
                        pictures = {"model": sr, **({"bicubic": up} if baselines else {})}
                        _collect(collector, dataset, split, batch, pictures, row_texts)
                    if with_predictions and texts:
                        _record(predictions[split], dataset, batch, texts, names)
                    if not baselines:
                        _probe_hr(judges, batch)
        _all_reduce([*images.values(), *reads.values()], device)
    finally:
        store.flush_all()
        model.train(was_training)
    line = readings_line(judges, tallies)
    if line:
        log.info(line)

    described = describe(judges)
    sizes = {name: len(ds) for name, ds in datasets.items()}

    def row(name: str, image_acc: MetricAccumulator | None) -> dict[str, Any]:
        return _row_result(
            image_acc, {j: reads[(name, j)] for j in names}, sizes, protocol, batch_size, described
        )

    result = row("model", images["model"])
    result["precision"] = precision
    result["judge_precision"] = judge_precision
    if not judges:
        result["notes"] = [NO_JUDGE_HINT]
    if baselines:
        result["baselines"] = {"bicubic": row("bicubic", images["bicubic"]), "hr": row("hr", None)}
        for j in judges:
            hr = result["baselines"]["hr"]["average"]["acc_by_judge"].get(j.name)
            j.hr_probe = (hr, sum(sizes.values()))
    _warn_blind_judges(result, judges)
    _no_result_for_nonfinite(result)
    if collector is not None:
        result["records"] = collector.build(
            dist_utils.all_gather_objects(collector.chunks),
            meta={
                "protocol": protocol,
                "batch_size": batch_size,
                "primary_judge": result["primary_judge"],
                "judge_descriptions": described,
            },
        )
    if with_predictions and judges:
        gathered = dist_utils.all_gather_objects(predictions)
        result["predictions"] = {
            split: sorted((p for part in gathered for p in part[split]), key=lambda p: p["index"])
            for split in datasets
        }
    return result


def evaluate_config(
    model: nn.Module,
    datasets: dict[str, Any],
    config: dict[str, Any],
    *,
    judges: list[Judge] | None = None,
    device: torch.device | str | None = None,
    protocol: str | None = None,
    batch_size: int | None = None,
    baselines: bool | None = None,
    with_predictions: bool = True,
    env: dist_utils.DistEnv | None = None,
    records: bool = False,
    precision: str | None = None,
    reading_store: bool | None = None,
    judge_precision: str | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_model` under the config's ``[eval]`` settings (each None: the config's
    value, then ``EvalSection``'s default): what every command and the trainer evaluate with."""
    from tsrx.engine.config import eval_section

    settings = eval_section(
        config,
        protocol=protocol,
        batch_size=batch_size,
        baselines=baselines,
        precision=precision,
        reading_store=reading_store,
        judge_precision=judge_precision,
    )
    if settings.protocol not in PROTOCOLS:
        raise TsrxError(
            f"eval protocol {settings.protocol!r}: expected one of {', '.join(PROTOCOLS)}"
        )
    return evaluate_model(
        model,
        datasets,
        protocol=settings.protocol,
        batch_size=settings.batch_size,
        device=device,
        judges=judges,
        baselines=settings.baselines,
        with_predictions=with_predictions,
        env=env,
        records=records,
        precision=settings.precision,
        reading_store=settings.reading_store,
        judge_precision=settings.judge_precision,
    )


def textzoom_test_tables(root: str | Path) -> dict[str, dict[str, Any]]:
    """The dataset tables of TextZoom's ``test/{easy,medium,hard}`` found under ``root``."""
    return {
        s: {"type": "textzoom", "roots": [f"test/{s}"]}
        for s in TEXTZOOM_TEST_SPLITS
        if (Path(root) / "test" / s).is_dir()
    }


def evaluation_sets(
    config: dict[str, Any], data_root: str | Path | None = None, where: str = "--data"
) -> dict[str, Any]:
    """The splits an evaluation reads: the config's ``[data.test]`` tables (under
    ``data_root`` when given); with none, or when they are not under ``data_root``,
    TextZoom's ``test/{easy,medium,hard}`` found there."""
    from tsrx.data.loader import build_dataset

    data = dict(config.get("data") or {})
    if data_root is not None:
        data["root"] = str(data_root)
    from tsrx.data.config import data_section

    data = {**dataclasses.asdict(data_section({"data": data})), **data}
    tables = dict(data.get("test") or {})
    root = Path(data["root"])
    if data_root is not None and tables:
        roots = [r for t in tables.values() for r in (t.get("roots") or []) if isinstance(r, str)]
        if not all((root / r).is_dir() for r in roots):
            tables = {}  # the config's splits are not there: take TextZoom's layout
    if data_root is not None and not tables:
        tables = textzoom_test_tables(root)
        if not tables:
            from tsrx.data.roots import misplaced_root

            raise TsrxError(
                f"{where} {data_root}: no test/easy, test/medium or test/hard folder in it ("
                + (misplaced_root(root) or "pass the TextZoom folder that holds test/")
                + ")"
            )
    if not tables:
        raise TsrxError(
            "no test data: pass --data ROOT (holding test/easy, test/medium, test/hard) or a "
            "config with [data.test] tables"
        )
    return {name: build_dataset(t, data, f"data.test.{name}") for name, t in tables.items()}


def _probe_hr(judges: list[Judge], batch: dict[str, Any]) -> None:
    """Once per judge: its accuracy on the first ``HR_PROBE_MIN`` HR images it meets, the
    sanity check of :func:`_warn_blind_judges` (the model's own recognizer may still be
    learning: not probed)."""
    for j in judges:
        if j.own or j.hr_probe is not None:
            continue
        preds = j.read(batch["hr"], persist=True)
        right = sum(
            normalize_for_accuracy(p) == normalize_for_accuracy(t)
            for p, t in zip(preds, batch["label"])
        )
        seen_right, seen = j.hr_seen
        j.hr_seen = (seen_right + right, seen + len(preds))
        if j.hr_seen[1] >= HR_PROBE_MIN:
            j.hr_probe = (j.hr_seen[0] / j.hr_seen[1], j.hr_seen[1])


def readings_line(judges: list[Judge], before: list[dict[str, int]]) -> str | None:
    """'judges: N readings from the reading store (ROOT), M images read, ...', counted since
    ``before`` (each judge's ``tally`` then): why a second evaluation is fast. None when the
    store neither gave nor kept a reading."""
    from tsrx.engine import reading_store

    counts = {
        key: sum(j.tally[key] - b[key] for j, b in zip(judges, before) if not j.own)
        for key in ("read", "store", "memory", "kept")
    }
    if not counts["store"] and not counts["kept"]:
        return None
    return (
        f"judges: {counts['store']} reading(s) from the reading store "
        f"({reading_store.root() or 'off'}), {counts['read']} image(s) read, "
        f"{counts['memory']} remembered in this process; {counts['kept']} new reading(s) kept"
    )


def _warn_blind_judges(result: dict[str, Any], judges: list[Judge]) -> None:
    """A judge that cannot read HR images (wrong weights, vocabulary or input convention)
    gives a table of near-zeros that looks like a result: say so with every table."""
    for j in judges:
        if j.hr_probe is None:
            continue
        acc, n = j.hr_probe
        if acc is None or n < HR_PROBE_MIN or acc >= SANE_HR_ACC:
            continue
        warning = (
            f"WARNING: judge {j.name} ({j.description}) reads only {acc:.2f} of {n} HR images "
            f"correctly (a trained recognizer reads most; below {SANE_HR_ACC} it is broken), so "
            "its ACC means nothing. Likely causes: wrong weights (not a trained file for this "
            "recognizer), a vocabulary / alphabet that does not match the weights' classes, or "
            "an input convention the weights were not trained with (channels, grey vs RGB, "
            "size, value range)"
        )
        result["notes"] = list(result.get("notes") or []) + [warning]
        if not j.warned:
            j.warned = True
            log.warning(warning)


def _no_result_for_nonfinite(result: dict[str, Any]) -> None:
    """A NaN / inf metric (NaN weights, an exploded model) is no result: its value becomes None
    (strict JSON, selectors never pick it, reports show '-'), listed in ``nonfinite`` and
    announced by a warning that is printed with every table of the result."""
    bad = []
    rows = [("model", result)] + list((result.get("baselines") or {}).items())
    for row, res in rows:
        for split, values in [*res["splits"].items(), ("average", res["average"])]:
            for metric, value in values.items():
                inner = value.items() if isinstance(value, dict) else [(None, value)]
                for judge, v in inner:  # acc_by_judge holds one value per judge
                    if isinstance(v, float) and not math.isfinite(v):
                        if judge is None:
                            values[metric] = None
                        else:
                            value[judge] = None
                        name = metric if judge is None else f"{metric}[{judge}]"
                        bad.append(f"{row}.{split}.{name}" if row != "model" else f"{split}.{name}")
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        result["nonfinite"] = bad
        warning = (
            f"WARNING: non-finite metric values ({shown}): the model's output holds NaN or "
            "inf (NaN weights?). They count as no result"
        )
        result["notes"] = [warning] + list(result.get("notes") or [])
        log.warning(warning)


def _record(
    out: list[dict[str, Any]],
    dataset: Any,
    batch: dict[str, Any],
    texts: dict[str, list[str]],
    names: list[str],
) -> None:
    primary = next(n for n in names if n in texts)
    for k, (i, label) in enumerate(zip(batch["index"].tolist(), batch["label"])):
        pred = texts[primary][k]
        entry = {
            "index": _lmdb_index(dataset, i),
            "label": label,
            "pred": pred,
            "correct": normalize_for_accuracy(pred) == normalize_for_accuracy(label),
        }
        if len(texts) > 1:
            entry["preds"] = {n: t[k] for n, t in texts.items()}
        out.append(entry)


def _collect(
    collector: RecordCollector,
    dataset: Any,
    split: str,
    batch: dict[str, Any],
    pictures: dict[str, torch.Tensor | None],
    row_texts: dict[str, dict[str, list[str]]],
) -> None:
    """One batch's per-image values: PSNR/SSIM of each row's images against HR (per image,
    whatever the protocol), each judge's reading and whether it is correct."""
    labels = list(batch["label"])
    wanted = [normalize_for_accuracy(t) for t in labels]
    rows: dict[str, dict[str, Any]] = {}
    for row, texts in row_texts.items():
        image = pictures.get(row)
        rows[row] = {
            "psnr": psnr_per_image(image, batch["hr"]).cpu().numpy() if image is not None else None,
            "ssim": ssim_per_image(image, batch["hr"]).cpu().numpy() if image is not None else None,
            "preds": texts,
            "correct": {
                j: [normalize_for_accuracy(p) == w for p, w in zip(preds, wanted)]
                for j, preds in texts.items()
            },
        }
    index = [_lmdb_index(dataset, i) for i in batch["index"].tolist()]
    collector.add(split, index, labels, rows)


def take_records(result: dict[str, Any]) -> Records | None:
    """Remove and return the per-image records of an ``evaluate_model(records=True)`` result."""
    records: Records | None = result.pop("records", None)
    return records


def _all_reduce(accs: list[MetricAccumulator], device: torch.device) -> None:
    """One collective for all rows and judges: every rank calls it exactly once."""
    if not dist_utils.active():
        return
    states = [acc.state_tensor(device) for acc in accs]
    sizes = [s.numel() for s in states]
    flat = dist_utils.all_reduce_sum(torch.cat(states))
    for acc, part in zip(accs, flat.split(sizes)):
        acc.load_state_tensor(part)


def _weighted(values: list[tuple[int, float | None]]) -> float | None:
    pairs = [(n, v) for n, v in values if v is not None and n > 0 and not math.isnan(v)]
    weight = sum(n for n, _ in pairs)
    return sum(n * v for n, v in pairs) / weight if weight else None


def _row_result(
    image_acc: MetricAccumulator | None,
    judge_accs: dict[str, MetricAccumulator],
    sizes: dict[str, int],
    protocol: str,
    batch_size: int,
    described: dict[str, str],
) -> dict[str, Any]:
    """One row (model, bicubic or HR): PSNR/SSIM once, ACC per judge, ``acc`` = the first's."""
    computed = image_acc.compute()["splits"] if image_acc is not None else {}
    by_judge = {name: acc.compute()["splits"] for name, acc in judge_accs.items()}
    primary = next(iter(described), None)
    splits: dict[str, dict[str, Any]] = {}
    for split, n in sizes.items():
        own = computed.get(split) or {}
        accs = {name: (by_judge[name].get(split) or {}).get("acc") for name in described}
        splits[split] = {
            "n": n,
            "acc": accs.get(primary) if primary else None,
            "psnr": own.get("psnr"),
            "ssim": own.get("ssim"),
            "acc_by_judge": accs,
        }
    average = weighted_average(splits)
    average["acc_by_judge"] = {
        name: _weighted([(s["n"], s["acc_by_judge"][name]) for s in splits.values()])
        for name in described
    }
    return {
        "protocol": protocol,
        "batch_size": batch_size,
        "recognizer": described.get(primary) if primary else None,
        "primary_judge": primary,
        "judges": dict(described),
        "splits": splits,
        "average": average,
    }


def without_predictions(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("predictions", "records")}


__all__ = [
    "evaluate_model",
    "evaluate_config",
    "evaluation_sets",
    "without_predictions",
    "take_records",
    "FIELDS",
]
