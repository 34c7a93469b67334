"""``tsrx report --eval-missing``: test results for checkpoints that have none cached yet.

Each result is written to the run's ``eval/`` cache under the checkpoint's sha256 and the
eval settings, so the next report (or ``tsrx eval``) reads it instead of evaluating again.
torch and the engine are imported here, inside the functions, only when evaluation is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tsrx.errors import TsrxError
from tsrx.report import cache
from tsrx.report.collect import Collection, Run, Selected


@dataclass
class Pending:
    run: Run
    selector: Selected

    @property
    def checkpoint(self) -> Path:
        return self.run.path / self.selector.filename


def missing(
    coll: Collection, selectors: list[Selected], overrides: dict | None = None
) -> list[Pending]:
    """Checkpoints on disk whose test result is not cached for the current settings."""
    out = []
    for run in coll.runs:
        if run.config is None:
            continue
        for sel in selectors:
            ckpt = run.path / sel.filename
            if not ckpt.is_file():
                continue
            settings = cache.eval_settings(run.config, overrides)
            values, _, _ = cache.lookup(run.path, sel.stem, ckpt, settings)
            if values is None:
                out.append(Pending(run, sel))
    return out


def evaluate_checkpoint(
    run: Run, checkpoint: Path, *, device: str = "cpu", batch_size: int | None = None
) -> dict:
    """Build the run's model, load the checkpoint in one shot, evaluate on the run's test splits."""
    import torch

    from tsrx.checkpoint import load_checkpoint, load_into, state_dict_for
    from tsrx.data.loader import build_datasets, ensure_synth
    from tsrx.engine.evaluator import evaluate_model
    from tsrx.engine.judges import build_judges
    from tsrx.models.build import build_model

    config = run.config or {}
    eval_cfg = config.get("eval") or {}
    model = build_model(config, load_init=False)
    load_into(
        model,
        state_dict_for(load_checkpoint(checkpoint)),
        allow_shape_mismatch=(config.get("model") or {}).get("allow_shape_mismatch", False),
        source=str(checkpoint),
    )
    dev = torch.device(device)
    model.to(dev).eval()
    judges = [j.to(dev) for j in build_judges(eval_cfg, model)]
    ensure_synth(config["data"])
    _, _, test = build_datasets(config["data"])
    if not test:
        raise TsrxError(
            f"{run.path / 'config.toml'}: [data.test] names no test split to evaluate on"
        )
    return evaluate_model(
        model,
        test,
        protocol=eval_cfg.get("protocol", "textzoom"),
        batch_size=batch_size or eval_cfg.get("batch_size", 50),
        device=dev,
        judges=judges,
        baselines=bool(eval_cfg.get("baselines", False)),
        records=True,
    )


def evaluate_missing(
    pending: list[Pending],
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    evaluate: Callable[..., dict] | None = None,
    progress: Callable[[str], None] = lambda msg: None,
) -> list[Path]:
    """Evaluate and cache each pending checkpoint; returns the cache files written."""
    evaluate = evaluate or evaluate_checkpoint
    overrides = {"batch_size": batch_size} if batch_size else None
    written = []
    for i, p in enumerate(pending, start=1):
        progress(f"[{i}/{len(pending)}] evaluating {p.checkpoint}")
        result = evaluate(p.run, p.checkpoint, device=device, batch_size=batch_size)
        records = result.pop("records", None)  # tsrx.engine.evaluator.take_records
        settings = cache.eval_settings(p.run.config or {}, overrides)
        written.append(cache.store(p.run.path, p.checkpoint, settings, result, records))
    return written
