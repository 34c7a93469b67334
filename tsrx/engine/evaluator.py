"""Evaluation of a model on named splits: ACC, PSNR, SSIM per split and their average.

The metric conventions live in ``tsrx.engine.metrics``. Here: which images are
compared and who reads them. PSNR/SSIM compare the model's SR output with HR. ACC is
the model's own recognizer when it has one, else the judge (a recognizer with real
weights); with neither, ACC is None, never a number from an untrained recognizer.

Under DDP each rank evaluates every ``world_size``-th batch of the fixed batch order
and the metric sums are all_reduced once per evaluation: every rank reaches that one
collective, whatever its share, and the ``textzoom`` protocol's per-batch averages
equal the single-process numbers because the batches are the same.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from tsrx.engine import distributed as dist_utils
from tsrx.engine.metrics import FIELDS, MetricAccumulator
from tsrx.models.text import ctc_greedy_decode, normalize_for_accuracy

log = logging.getLogger("tsrx.eval")

NO_JUDGE_HINT = ("ACC needs a recognizer with trained weights: pass --recognizer crnn.pth "
                 "(or a tsrx checkpoint), or set [eval] judge_weights")


def _decode(recognizer: nn.Module, logits: torch.Tensor) -> list[str]:
    if hasattr(recognizer, "decode"):
        return recognizer.decode(logits)
    return ctc_greedy_decode(logits, recognizer.alphabet)


def read_images(model: nn.Module, judge: nn.Module | None, images: torch.Tensor) -> list[str] | None:
    """What the judge (else the model's own recognizer, with its head) reads in ``images``.

    Both are joint models (a judge is one with only a recognizer and maybe a head).
    """
    reader = judge if judge is not None else model
    recognizer = getattr(reader, "recognizer", None)
    if recognizer is None:
        return None
    head = getattr(reader, "head", None)
    logits = head(recognizer.encode(images[:, :3])) if head is not None else recognizer(images[:, :3])
    return _decode(recognizer, logits)


def _model_predictions(model: nn.Module, judge: nn.Module | None, out: dict,
                       sr: torch.Tensor | None) -> list[str] | None:
    if out.get("logits") is not None:
        return _decode(model.recognizer, out["logits"])
    if sr is not None:
        return read_images(model, judge, sr)
    return None


def _bicubic(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return torch.nn.functional.interpolate(lr, size, mode="bicubic", align_corners=False)


def _lmdb_index(dataset: Any, position: int) -> int:
    if hasattr(dataset, "lmdb_index"):
        return int(dataset.lmdb_index(position)[1])
    return position + 1


def _my_batches(n: int, batch_size: int, env: dist_utils.DistEnv) -> list[list[int]]:
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return batches[env.rank::env.world_size]


@torch.no_grad()
def evaluate_model(model: nn.Module, datasets: dict[str, Any], protocol: str = "textzoom",
                   batch_size: int = 50, device: torch.device | str | None = None,
                   judge: nn.Module | None = None, baselines: bool = False,
                   with_predictions: bool = True, env: dist_utils.DistEnv | None = None,
                   judge_name: str | None = None) -> dict:
    """The evaluation result of docs/architecture.md for ``model`` on ``datasets``.

    ``judge`` reads the SR images when the model has no recognizer; ``baselines`` adds
    the bicubic and HR rows; ``env`` shards batches over DDP ranks (all ranks must call).
    """
    from torch.utils.data import DataLoader

    from tsrx.data.loader import collate_batch
    env = env or dist_utils.DistEnv()
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    rows = ["model"] + (["bicubic", "hr"] if baselines else [])
    accs = {row: MetricAccumulator(protocol, list(datasets)) for row in rows}
    has_reader = judge is not None or getattr(model, "recognizer", None) is not None
    if judge_name is None and has_reader:
        reader = judge if judge is not None else model
        judge_name = ("the model's own recognizer" if judge is None else
                      type(getattr(reader, "recognizer", reader)).__name__)
    predictions: dict[str, list[dict]] = {name: [] for name in datasets}
    was_training = model.training
    model.eval()
    try:
        for split, dataset in datasets.items():
            loader = DataLoader(dataset, batch_sampler=_my_batches(len(dataset), batch_size, env),
                                collate_fn=collate_batch, num_workers=0)
            for batch in loader:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                out = model(batch)
                sr = out.get("sr")
                preds = _model_predictions(model, judge, out, sr)
                accs["model"].update(split, sr, batch["hr"] if sr is not None else None,
                                     preds, batch["label"] if preds is not None else None)
                if baselines:
                    up = _bicubic(batch["lr"][:, :3], tuple(batch["hr"].shape[-2:]))
                    bic_preds = read_images(model, judge, up)
                    accs["bicubic"].update(split, up, batch["hr"], bic_preds,
                                           batch["label"] if bic_preds is not None else None)
                    if has_reader:
                        accs["hr"].update(split, None, None, read_images(model, judge, batch["hr"]),
                                          batch["label"])
                if with_predictions and preds is not None:
                    for i, label, pred in zip(batch["index"].tolist(), batch["label"], preds):
                        predictions[split].append({
                            "index": _lmdb_index(dataset, i), "label": label, "pred": pred,
                            "correct": normalize_for_accuracy(pred) == normalize_for_accuracy(label)})
        _all_reduce(accs, device)
    finally:
        model.train(was_training)

    result = _result(accs["model"], protocol, batch_size, judge_name, has_reader)
    if not has_reader:
        result["notes"] = [NO_JUDGE_HINT]
    if baselines:
        result["baselines"] = {
            "bicubic": _result(accs["bicubic"], protocol, batch_size, judge_name, has_reader),
            "hr": _hr_result(accs["hr"], datasets, protocol, batch_size, judge_name, has_reader)}
    _no_result_for_nonfinite(result)
    if with_predictions and has_reader:
        gathered = dist_utils.all_gather_objects(predictions)
        result["predictions"] = {
            split: sorted((p for part in gathered for p in part[split]), key=lambda p: p["index"])
            for split in datasets}
    return result


def _no_result_for_nonfinite(result: dict) -> None:
    """A NaN / inf metric (NaN weights, an exploded model) is no result: its value becomes None
    (strict JSON, selectors never pick it, reports show '-'), listed in ``nonfinite`` and
    announced by a warning that is printed with every table of the result."""
    import math
    bad = []
    rows = [("model", result)] + list((result.get("baselines") or {}).items())
    for row, res in rows:
        for split, values in [*res["splits"].items(), ("average", res["average"])]:
            for metric, value in values.items():
                if isinstance(value, float) and not math.isfinite(value):
                    values[metric] = None
                    bad.append(f"{row}.{split}.{metric}" if row != "model" else f"{split}.{metric}")
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        result["nonfinite"] = bad
        warning = (f"WARNING: non-finite metric values ({shown}): the model's output holds NaN or "
                   "inf (NaN weights?). They count as no result")
        result["notes"] = [warning] + list(result.get("notes") or [])
        log.warning(warning)


def _all_reduce(accs: dict[str, MetricAccumulator], device: torch.device) -> None:
    """One collective for all rows: every rank calls it exactly once per evaluation."""
    if not dist_utils.active():
        return
    states = [acc.state_tensor(device) for acc in accs.values()]
    sizes = [s.numel() for s in states]
    flat = dist_utils.all_reduce_sum(torch.cat(states))
    for acc, part in zip(accs.values(), flat.split(sizes)):
        acc.load_state_tensor(part)


def _result(acc: MetricAccumulator, protocol: str, batch_size: int, judge_name: str | None,
            has_reader: bool) -> dict:
    computed = acc.compute()
    if not has_reader:
        for values in [*computed["splits"].values(), computed["average"]]:
            values["acc"] = None
    return {"protocol": protocol, "batch_size": batch_size,
            "recognizer": judge_name if has_reader else None,
            "splits": computed["splits"], "average": computed["average"]}


def _hr_result(acc: MetricAccumulator, datasets: dict, protocol: str, batch_size: int,
               judge_name: str | None, has_reader: bool) -> dict:
    if has_reader:
        return _result(acc, protocol, batch_size, judge_name, has_reader)
    from tsrx.engine.metrics import weighted_average
    splits = {name: {"n": len(ds), "acc": None, "psnr": None, "ssim": None}
              for name, ds in datasets.items()}
    return {"protocol": protocol, "batch_size": batch_size, "recognizer": None,
            "splits": splits, "average": weighted_average(splits)}


def without_predictions(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "predictions"}


# -- presentation -------------------------------------------------------------------------
def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def result_caption(result: dict) -> list[str]:
    """The lines printed under every table: the protocol, batch size and judge."""
    lines = [f"protocol {result['protocol']}, batch size {result['batch_size']}, "
             f"recognizer: {result.get('recognizer') or '-'}"]
    return lines + list(result.get("notes") or [])


def result_table(result: dict, title: str = "evaluation") -> Any:
    """One rich table: rows easy/medium/hard/A (and the baselines'), columns ACC/PSNR/SSIM."""
    from rich.markup import escape
    from rich.table import Table
    table = Table(title=escape(title))
    for col, justify in (("", "left"), ("split", "left"), ("ACC", "right"), ("PSNR", "right"),
                         ("SSIM", "right"), ("n", "right")):
        table.add_column(col, justify=justify)
    named = [("model", result)] + [
        (name, res) for name, res in (result.get("baselines") or {}).items()
        # the HR row has only ACC: without a judge it would be a block of dashes
        if any(res["average"][m] is not None for m in ("acc", "psnr", "ssim"))]
    for i, (name, res) in enumerate(named):
        if i:
            table.add_section()
        rows = list(res["splits"].items()) + [("A", res["average"])]
        for j, (split, v) in enumerate(rows):
            table.add_row(name if j == 0 else "", split, _fmt(v["acc"], 4), _fmt(v["psnr"], 4),
                          _fmt(v["ssim"], 4), str(v["n"]))
    return table


def print_result(console: Any, result: dict, title: str = "evaluation") -> None:
    """The table, then its caption lines unwrapped (paths stay copyable)."""
    console.print(result_table(result, title))
    for line in result_caption(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if result.get("nonfinite"):  # loud, and on stderr too when the table goes to a file
        from tsrx.console import err_console
        err_console.print(f"[bold red]{result['notes'][0]}[/]", highlight=False, soft_wrap=True)


__all__ = ["evaluate_model", "read_images", "result_table", "print_result", "result_caption",
           "without_predictions", "FIELDS"]
