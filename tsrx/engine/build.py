"""Assemble a training run from its resolved config.

Everything a run needs is built here, in one place and in a fixed order (the order
matters: model initialisation draws from the seeded RNG, so every rank builds the
same weights): model, tasks, losses, combiner, optimizer, scheduler, selectors,
datasets and loaders. The Trainer only wires them together.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from tsrx.data.config import data_section
from tsrx.engine.distributed import DistEnv
from tsrx.engine.loss_module import term_names
from tsrx.errors import TsrxError

if TYPE_CHECKING:
    from tsrx.contracts import Selector
    from tsrx.data.loader import ResumableSampler, SampleDataset
    from tsrx.engine.judges import Judge
    from tsrx.models.joint import JointModel

log = logging.getLogger("tsrx.engine")


@dataclass
class RunParts:
    """What a run is made of; see :func:`build_run`."""

    model: JointModel
    tasks: list[str]  # the model's training terms (model.loss_terms)
    losses: dict[str, nn.Module]
    loss_tables: dict[str, dict[str, Any]]  # the resolved loss choice, recorded in the run dir
    combiner: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    selectors: list[Selector]
    judges: list[Judge]  # the primary first
    val_judges: list[Judge]  # those of them that read at validation ([eval] val_judges)
    train_set: SampleDataset
    val_sets: dict[str, SampleDataset]
    test_sets: dict[str, SampleDataset]
    sampler: ResumableSampler
    train_loader: Any
    batch_size_per_rank: int
    warnings: list[str] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def per_rank_batch(global_batch: int, world_size: int, key: str = "train.batch_size") -> int:
    if global_batch < 1 or global_batch % world_size:
        raise TsrxError(
            f"{key} = {global_batch} is the global batch size and must be a positive "
            f"multiple of the number of processes ({world_size}); e.g. "
            f"{max(world_size, global_batch - global_batch % world_size)}"
        )
    return global_batch // world_size


def model_tasks(model: JointModel) -> list[str]:
    """The training terms a model produces (``model.loss_terms()``), in logging order."""
    tasks = list(model.loss_terms())
    if not tasks:
        raise TsrxError("[model] has neither an SR part nor a recognizer: nothing to train")
    return tasks


def build_losses(
    loss_cfg: dict[str, Any],
    tasks: list[str],
    model: JointModel,
    data_cfg: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Loss modules per term, the resolved tables (defaults filled in) and warnings.

    Which terms exist, which registry each term's table names, its default and the shapes
    its contract's dry call uses all come from ``model.loss_terms`` (tsrx/models/joint.py);
    an attention recognizer (``ctc = False``) trains with its own loss,
    ``recognition = {type = "own"}`` (its default), a CTC recognizer with a CTC loss.
    """
    from tsrx.registry import ALL, component_defaults

    hr_size = tuple(data_section({"data": data_cfg or {}}).hr_size)
    specs = model.loss_terms(hr_size)
    rec_ctc = bool(getattr(getattr(model, "recognizer", None), "ctc", True))
    losses, tables, warnings = {}, {}, []
    for task, table in loss_cfg.items():
        if task != "combiner" and table and task not in tasks:
            warnings.append(
                f"[loss] {task} = {table} has no effect: the model trains no {task!r} term "
                f"(its terms: {', '.join(tasks)})"
            )
    for task in tasks:
        spec = specs[task]
        table = loss_cfg.get(task) or spec.default
        if table is None:
            raise TsrxError(
                f"[loss] {task}: the model trains a {task!r} term and its SR backbone names "
                f"no default loss for it; set [loss] {task} = {{type = ...}} "
                f"(registered: {', '.join(ALL[spec.registry].names()) or '(none)'})"
            )
        reg = ALL[spec.registry]
        losses[task] = reg.build(table, f"loss.{task}", contract_args=spec.shapes)
        if task == "recognition" and bool(getattr(losses[task], "own", False)) == rec_ctc:
            raise TsrxError(
                f"loss.recognition = {table}: "
                + (
                    "an attention recognizer (ctc = false) trains with its own loss; use "
                    'recognition = {type = "own"} or leave [loss] recognition out'
                    if not rec_ctc
                    else "the recognizer gives CTC logits and has no loss of its own; use a "
                    'CTC loss such as {type = "ctc"}'
                )
            )
        tables[task] = component_defaults(table, spec.registry)
    return losses, tables, warnings


def check_selector_judges(selectors: list[Any], judges: list[Any]) -> None:
    """A selector that follows one judge's accuracy must name a judge of this run."""
    names = [j.name for j in judges]
    for sel in selectors:
        wanted = getattr(sel, "judge", None)
        if wanted is not None and wanted not in names:
            raise TsrxError(
                f"selector {sel.name!r}: judge = {wanted!r} is not a judge of this run; "
                f"judges: {', '.join(names) or '(none: set [eval.judges])'}"
            )


def build_run(config: dict[str, Any], env: DistEnv, device: torch.device) -> RunParts:
    """Every part of a training run, in the order described in the module docstring."""
    from tsrx.data.loader import ResumableSampler, build_datasets, build_loader, ensure_synth
    from tsrx.models.build import build_model
    from tsrx.registry import COMBINERS, OPTIMIZERS, SCHEDULERS, SELECTORS

    train_cfg, data_cfg = config["train"], config["data"]
    seed = int(config.get("seed", 0))
    batch = per_rank_batch(train_cfg["batch_size"], env.world_size)

    seed_everything(seed)  # the same on every rank: identical initial weights
    from rich.console import Console

    # the init load report is printed once, by rank 0
    model = build_model(config, console=None if env.is_main else Console(quiet=True)).to(device)
    tasks = model_tasks(model)
    losses, loss_tables, warnings = build_losses(config.get("loss") or {}, tasks, model, data_cfg)
    losses = {k: v.to(device) for k, v in losses.items()}
    # the combiner weighs every logged term: a loss's named sub-terms each count as one
    combined = [name for task in tasks for name in term_names(task, losses[task])]
    combiner = COMBINERS.build(config["loss"]["combiner"], "loss.combiner", tasks=combined)
    combiner = combiner.to(device)

    model_params = [p for p in model.parameters() if p.requires_grad]
    if not model_params:
        raise TsrxError("[model] has no trainable parameters (everything is frozen)")
    groups: list[dict[str, Any]] = [{"params": model_params}]
    combiner_params = [p for p in combiner.parameters() if p.requires_grad]
    if combiner_params:
        groups.append({"params": combiner_params, "weight_decay": 0.0})
    optimizer = OPTIMIZERS.build(config["optim"], "optim", params=groups)
    scheduler = SCHEDULERS.build(
        config["sched"], "sched", optimizer=optimizer, total_steps=train_cfg["steps"]
    )
    selectors = []
    from tsrx.data.holdout import selection_on_test_warning, validation_splits

    splits = validation_splits(data_cfg)
    for i, s in enumerate(train_cfg["selectors"]):
        table = {"type": s} if isinstance(s, str) else s
        selectors.append(
            SELECTORS.build(table, f"train.selectors[{i}]", contract_args={"splits": splits})
        )
    from tsrx.engine.config import eval_section
    from tsrx.engine.judge_build import build_judges, validation_judges

    eval_cfg = config.get("eval") or {}
    judges = [j.to(device) for j in build_judges(eval_cfg, model, warn=warnings.append)]
    val_judges = validation_judges(judges, eval_cfg, eval_section(config).val_judges)
    check_selector_judges(selectors, val_judges)
    if not val_judges and any(getattr(s, "metric", None) == "acc" for s in selectors):
        warnings.append(
            "selector best_acc never fires: no judge reads at validation (the model has no "
            "recognizer, and [eval] judges / val_judges name none), so it has no accuracy"
        )

    on_test = selection_on_test_warning(data_cfg)
    if on_test:
        warnings.append(on_test)
    if env.is_main:
        ensure_synth(data_cfg)
    from tsrx.engine.distributed import barrier

    barrier()  # other ranks wait for rank 0's synthetic data before opening it
    train_set, val_sets, test_sets = build_datasets(data_cfg)
    if train_set is None:
        raise TsrxError("[data] has no train table: nothing to train on (set [data.train])")
    # the registry's dataset contract (tsrx.contracts.check_dataset) requires __len__
    train_size = len(cast(Sized, train_set))
    if train_size < env.world_size:
        roots = ", ".join(str(s.path) for s in getattr(train_set, "splits", [])) or "data.train"
        raise TsrxError(
            f"data.train ({roots}) has {train_size} usable sample(s): too few to "
            f"shard over {env.world_size} process(es)"
        )
    sampler = ResumableSampler(
        train_size,
        rank=env.rank,
        world_size=env.world_size,
        seed=seed,
        shuffle=True,
        drop_last=True,
    )
    if len(sampler) < batch:
        raise TsrxError(
            f"data.train has {train_size} samples: too few for one batch of "
            f"{train_cfg['batch_size']} over {env.world_size} process(es)"
        )
    loader = build_loader(
        train_set,
        batch,
        sampler=sampler,
        num_workers=data_cfg["num_workers"],
        pin_memory=device.type == "cuda",
    )
    for w in warnings:
        log.warning(w)
    return RunParts(
        model=model,
        tasks=tasks,
        losses=losses,
        loss_tables=loss_tables,
        combiner=combiner,
        optimizer=optimizer,
        scheduler=scheduler,
        selectors=selectors,
        judges=judges,
        val_judges=val_judges,
        train_set=train_set,
        val_sets=val_sets,
        test_sets=test_sets,
        sampler=sampler,
        train_loader=loader,
        batch_size_per_rank=batch,
        warnings=warnings,
    )
