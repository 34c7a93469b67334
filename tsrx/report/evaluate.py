"""``tsrx report --eval-missing``: test results for checkpoints that have none cached yet.

Each result is written to the run's ``eval/`` cache under the checkpoint's sha256 and the
eval settings, so the next report (or ``tsrx eval``) reads it instead of evaluating again.
torch and the engine are imported here, inside the functions, only when evaluation is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsrx.engine import result_cache as cache
from tsrx.errors import TsrxError
from tsrx.report.collect import Collection, Run, Selected


@dataclass
class Pending:
    run: Run
    selector: Selected

    @property
    def checkpoint(self) -> Path:
        return self.run.path / self.selector.filename


def missing(
    coll: Collection, selectors: list[Selected], overrides: dict[str, Any] | None = None
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
    run: Run, checkpoint: Path, *, device: str | None = None, batch_size: int | None = None
) -> dict[str, Any]:
    """The run's checkpoint opened as ``tsrx eval`` opens it (the run's config.toml, checked like
    a checkpoint's, describes the model), evaluated on the run's test splits."""
    from tsrx.data.loader import ensure_synth
    from tsrx.engine.evaluator import evaluate_config, evaluation_sets
    from tsrx.engine.loading import open_checkpoint

    config = run.config or {}
    loaded = open_checkpoint(checkpoint, config=config, stored=True, device=device).with_judges()
    ensure_synth(config["data"])
    if not (config["data"].get("test") or {}):
        raise TsrxError(
            f"{run.path / 'config.toml'}: [data.test] names no test split to evaluate on"
        )
    return evaluate_config(
        loaded.model,
        evaluation_sets(config),
        config,
        judges=loaded.judges,
        device=loaded.device,
        batch_size=batch_size,
        records=True,
    )


def evaluate_missing(
    pending: list[Pending],
    *,
    device: str | None = None,
    batch_size: int | None = None,
    evaluate: Callable[..., dict[str, Any]] | None = None,
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
