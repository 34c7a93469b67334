"""The Trainer: build everything, then step, checkpoint, validate, log; resume exactly.

Read top to bottom: ``__init__`` builds the run (``tsrx.engine.build``), ``train_step``
does one optimisation step, ``train`` is the loop, ``state_dict`` / ``load_state_dict``
hold everything a bit-identical resume needs. What a run writes as it goes (metrics lines,
status, TensorBoard, the console) is ``RunLog``'s job (``tsrx/engine/runfiles.py``).

DDP wraps a small module holding the model *and* the loss combiner, so the learned
task weights s_i get their gradients averaged over ranks exactly like the model's.
Checkpoints are written from the unwrapped parts, so a DDP and a one-process run save
identical keys (``sr.*``, ``recognizer.*``, ``head.*``, ``combiner.*``).

Once per step all ranks all_reduce one small vector: [non-finite flag, stop flag,
total loss, task losses]. It gives the rank-averaged losses for the log and makes all
ranks take the same decision (skip, stop with an error, or stop for preemption) at
the same step, so none is left waiting in a collective.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsrx.data.holdout import validation_record
from tsrx.data.roots import is_synthetic
from tsrx.engine import distributed as dist_utils
from tsrx.engine import signals
from tsrx.engine.build import build_run, seed_everything
from tsrx.engine.callbacks import build_callbacks
from tsrx.engine.config import eval_section
from tsrx.engine.grad_sync import use_layout_independent_sync
from tsrx.engine.loss_module import LossModule
from tsrx.engine.precision import autocast, check_precision
from tsrx.engine.rng import rng_state, set_rng_state
from tsrx.engine.runfiles import RunLog, atomic_json, plugin_records
from tsrx.errors import TsrxError
from tsrx.records import Records, write_records
from tsrx.runfiles import LAST, SUMMARY, final_records, validation_records


def _follows(selector: object, result: dict[str, Any]) -> dict[str, Any]:
    """Which judge's accuracy an accuracy selector followed (recorded with its best entry)."""
    if getattr(selector, "metric", None) != "acc":
        return {}
    return {"judge": getattr(selector, "judge", None) or result.get("primary_judge")}


def _schedule_depends_on_total(
    config: dict[str, Any], old_total: int, new_total: int, upto: int
) -> bool:
    """Whether the learning rates of steps 1..upto differ between the two totals (the
    schedule built twice on a one-parameter optimizer: it says nothing about which types
    look at the total, so any schedule, a plugin's too, is judged by what it does)."""
    from tsrx.registry import SCHEDULERS

    rates = []
    for total in (old_total, new_total):
        param = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([param], lr=float((config.get("optim") or {}).get("lr", 1.0)))
        sched = SCHEDULERS.build(config["sched"], "sched", optimizer=opt, total_steps=total)
        seen = []
        for _ in range(upto):
            opt.step()
            sched.step()
            seen.append(opt.param_groups[0]["lr"])
        rates.append(seen)
    return rates[0] != rates[1]


log = logging.getLogger("tsrx.train")


class Trainer:
    """One run on this rank; ``train()`` returns ``{"state": "completed" | "preempted", ...}``."""

    def __init__(
        self, config: dict[str, Any], run_dir: Path, env: dist_utils.DistEnv, device: torch.device
    ):
        self.config, self.run_dir, self.env, self.device = config, Path(run_dir), env, device
        tc = self.train_cfg = config["train"]
        self.eval_settings = eval_section(config)
        self.seed = int(config.get("seed", 0))
        if tc["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            # warn_only: CTC has no deterministic CUDA kernel; torch warns where it falls short
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        parts = self.parts = build_run(config, env, device)
        self.model, self.combiner = parts.model, parts.combiner
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler
        self.selectors = parts.selectors
        if tc["channels_last"]:
            # Module.to(memory_format=...) exists at runtime; torch's stubs leave it out
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.loss_module = LossModule(self.model, parts.losses, self.combiner)
        # what a step calls: the loss module itself, or its DDP wrapper when distributed
        self.step_module: nn.Module = self.loss_module
        if env.distributed:
            self.step_module = nn.parallel.DistributedDataParallel(
                self.loss_module, device_ids=[device.index] if device.type == "cuda" else None
            )
            if tc["deterministic"]:  # exact resume with any number of ranks (grad_sync.py)
                use_layout_independent_sync(self.step_module)
        self.forward = torch.compile(self.step_module) if tc["compile"] else self.step_module

        self.precision = tc["precision"]
        check_precision(self.precision, device, "train.precision")
        check_precision(self.eval_settings.precision, device, "eval.precision")
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.clip_params = [p for p in self.model.parameters() if p.requires_grad]

        seed_everything(self.seed + env.rank)  # per-rank randomness (dropout) from here on
        self.step = 0
        self.epoch = 0
        self.skipped = 0
        self.best: dict[str, dict[str, Any]] = {}
        self._last_val: tuple[int, dict[str, Any]] | None = (
            None  # (step, result) of the last validation
        )
        self._last_val_records: Records | None = None
        self.global_batch = tc["batch_size"]
        self.run_log = RunLog(self.run_dir, env.is_main, tc["steps"])
        # built last: the hooks see the whole run; setup before a resume overwrites their state
        self.callbacks = build_callbacks(tc["callbacks"])
        self.callbacks.setup(self)

    # -- one step -------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Forward, agree across ranks, backward, clip, update. Returns the step's log values."""
        batch = self._to_device(batch)
        self.step_module.train()
        with autocast(self.precision, self.device, "train.precision"):
            total, terms, logs = self.forward(batch)
        values = torch.stack(
            [total.detach().float(), *[t.detach().float() for t in terms.values()]]
        )
        floats: list[float] = values.tolist()
        local = [
            float(not all(math.isfinite(v) for v in floats)),
            float(signals.stop_requested() is not None),
            *floats,
        ]
        agreed = dist_utils.all_reduce_sum(
            torch.tensor(local, dtype=torch.float64, device=self.device)
        )
        agreed = agreed.cpu().tolist()
        world = self.env.world_size
        mean_total = agreed[2] / world
        mean_terms = {k: v / world for k, v in zip(terms, agreed[3:])}
        out = {
            "loss": mean_total,
            "terms": mean_terms,
            "combiner": logs,
            "stop": agreed[1] > 0,
            "skipped": False,
        }
        self.optimizer.zero_grad(set_to_none=True)
        if agreed[0] > 0:
            if self.train_cfg["on_nonfinite"] == "stop":
                shown = ", ".join(
                    f"{k}={v:.6g}" for k, v in {"total": mean_total, **mean_terms}.items()
                )
                raise TsrxError(
                    f"non-finite loss at step {self.step + 1} (rank-averaged terms: {shown}); "
                    'the run stops here. Set train.on_nonfinite = "skip" to skip such steps '
                    "and count them instead"
                )
            self.skipped += 1
            out["skipped"] = True
            log.warning(
                "step %d: non-finite loss (%s), step skipped (%d so far)",
                self.step + 1,
                mean_terms,
                self.skipped,
            )
        else:
            self.scaler.scale(total).backward()
            if self.train_cfg["grad_clip"]:
                self.scaler.unscale_(self.optimizer)
                # the model's gradients only: the reference clips the network at 0.25, and the
                # combiner's s_i must not shrink the model's step
                torch.nn.utils.clip_grad_norm_(self.clip_params, self.train_cfg["grad_clip"])
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        self.parts.sampler.advance(self.parts.batch_size_per_rank)
        self.step += 1
        return out

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Step until ``train.steps``; checkpoint, validate and log when due."""
        tc = self.train_cfg
        total = tc["steps"]
        self.run_log.status("running", self.step)
        self._record_start()
        batches = self._batches()
        self.run_log.start_progress(self.step)
        last_log = (time.perf_counter(), self.step)
        stopped = False
        try:
            while self.step < total and not stopped:
                out = self.train_step(next(batches))
                self.callbacks.after_step(self, out)
                stopped = out["stop"]
                now = time.perf_counter()
                rate = (self.step - last_log[1]) * self.global_batch / max(now - last_log[0], 1e-9)
                self.run_log.advance(self.step, out["loss"], self._lr(), rate)
                if self.step % tc["log_every"] == 0 or self.step == total:
                    self._log_train(out, rate)
                    last_log = (now, self.step)
                if self.step % tc["val_every"] == 0 or self.step == total:
                    self.validate()
                if self.step % tc["ckpt_every"] == 0 or self.step == total or stopped:
                    self.save_last()
        finally:
            self.run_log.stop_progress()
        state = "preempted" if stopped and self.step < total else "completed"
        if stopped:
            log.info("stopped after step %d: %s", self.step, signals.stop_requested())
        if state != "completed":
            self.run_log.status(state, self.step)
        # a completed run stays "running" until the final evaluation and summary are written
        # (run_training calls mark_completed), so `tsrx status` does not report it early
        result = {
            "state": state,
            "step": self.step,
            "total_steps": total,
            "skipped_steps": self.skipped,
            "run_dir": str(self.run_dir),
        }
        self.callbacks.on_train_end(self, result)
        return result

    def _batches(self) -> Iterator[dict[str, Any]]:
        """Batches forever, epoch after epoch; the sampler remembers the position."""
        sampler, loader = self.parts.sampler, self.parts.train_loader
        while True:
            sampler.set_epoch(self.epoch)
            # creating a DataLoader iterator draws a seed from the global RNG: fork it so
            # a resumed run (which creates one more iterator) draws the same numbers after
            with torch.random.fork_rng(devices=[]):
                iterator = iter(loader)
            yield from iterator
            self.epoch += 1

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in batch.items():
            if torch.is_tensor(v):
                v = v.to(self.device, non_blocking=True)
                if self.train_cfg["channels_last"] and v.dim() == 4:
                    v = v.contiguous(memory_format=torch.channels_last)
            out[k] = v
        return out

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- validation and selectors -------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        """Every rank evaluates its shard; the reduced result feeds the selectors."""
        if not self.parts.val_sets:
            if self.step == self.train_cfg["val_every"]:
                log.warning(
                    "no validation data ([data.val] or [data.test]): nothing to validate, "
                    "so no selector writes a best checkpoint"
                )
            return {}
        # the callbacks' evaluation weights (an EMA) are what is evaluated, selected and saved
        with self.callbacks.evaluation_weights(self):
            result = self._evaluate_and_select()
            self.callbacks.on_validation(self, result)
        return result

    def _evaluate_and_select(self) -> dict[str, Any]:
        from tsrx.engine.evaluator import evaluate_config, take_records

        with torch.random.fork_rng(devices=[]):
            result = evaluate_config(  # the path of tsrx eval, with training's batch size
                self.model,
                self.parts.val_sets,
                self.config,
                batch_size=self.train_cfg["val_batch_size"],
                baselines=False,
                device=self.device,
                judges=self.parts.val_judges,
                with_predictions=False,
                env=self.env,
                records=True,
            )
        records = take_records(result)
        if self.env.is_main and records is not None:
            write_records(validation_records(self.run_dir, self.step), records)
        for sel in self.selectors:
            score = sel.score(result)
            best = self.best.get(sel.name)
            if score > (best["score"] if best else -math.inf):
                self.best[sel.name] = {
                    "step": self.step,
                    "score": score,
                    "result": result,
                    "filename": sel.filename,
                    **_follows(sel, result),
                }
                if self.env.is_main:
                    from tsrx.checkpoint import make_checkpoint, save_checkpoint

                    save_checkpoint(
                        self.run_dir / sel.filename,
                        make_checkpoint(
                            self.model_state(),
                            step=self.step,
                            epoch=self.epoch,
                            config=self.config,
                            plugins=plugin_records(),
                            metrics={"selector": sel.name, "score": score, "result": result},
                        ),
                    )
        self.run_log.validation(self.step, result)
        self._last_val = (self.step, result)
        self._last_val_records = records
        return result

    def final_evaluation(self) -> dict[str, Any] | None:
        """The ``[eval]`` protocol on the test splits (validation splits when none).

        When that is exactly what the last validation computed (same splits, same step, same
        batch size, no baselines), its result is reused instead of evaluating again.
        """
        from tsrx.engine.evaluator import evaluate_config, take_records

        sets = self.parts.test_sets or self.parts.val_sets
        if not sets:
            return None
        last = self._last_val
        if last is not None and self._validation_is_final():
            log.info(
                "final evaluation: reusing the result of step %d's validation (same splits and "
                "settings)",
                self.step,
            )
            self._write_final_records(self._last_val_records)
            self._cache_for_selected(last[1], self._last_val_records)
            return last[1]
        with self.callbacks.evaluation_weights(self):
            result = evaluate_config(
                self.model,
                sets,
                self.config,
                device=self.device,
                judges=self.parts.judges,
                with_predictions=False,
                env=self.env,
                records=True,
            )
        records = take_records(result)
        self._write_final_records(records)
        self._cache_for_selected(result, records)
        return result

    def _write_final_records(self, records: Records | None) -> None:
        if self.env.is_main and records is not None:
            write_records(final_records(self.run_dir, self.step), records)

    def _cache_for_selected(self, result: dict[str, Any], records: Records | None) -> None:
        """A best checkpoint saved at the last step holds the weights the final evaluation
        read: its test result goes to the run's result cache under the key ``tsrx eval`` and
        ``tsrx report --eval-missing`` use, so the report shows test values without
        evaluating again."""
        if not self.env.is_main:
            return
        from tsrx.engine import result_cache

        settings = result_cache.eval_settings(self.config)
        for best in self.best.values():
            checkpoint = self.run_dir / best["filename"]
            if best["step"] != self.step or not checkpoint.is_file():
                continue
            try:
                result_cache.store(self.run_dir, checkpoint, settings, result, records)
            except OSError as exc:  # optional, as tsrx eval's copy: the run itself is complete
                log.warning("could not cache the test result of %s: %s", checkpoint, exc)

    def _validation_is_final(self) -> bool:
        from tsrx.data.holdout import validation_source

        data = self.config.get("data") or {}
        # val defaults to test (without data.holdout), and the final evaluation falls back to val
        same_splits = validation_source(data) == "test" or not data.get("test")
        return (
            self._last_val is not None
            and self._last_val[0] == self.step
            and same_splits
            and bool(self.parts.val_sets)
            and self.eval_settings.batch_size == self.train_cfg["val_batch_size"]
            and not self.eval_settings.baselines
            and len(self.parts.val_judges) == len(self.parts.judges)
        )

    def mark_completed(self) -> None:
        """status.json says "completed": called once the final evaluation is written."""
        self.run_log.status("completed", self.step)

    # -- state ------------------------------------------------------------------------------
    def model_state(self) -> dict[str, Any]:
        """The model's and the combiner's weights, keyed as every tsrx checkpoint saves them."""
        state = dict(self.model.state_dict())
        state.update({f"combiner.{k}": v for k, v in self.combiner.state_dict().items()})
        return state

    def state_dict(self) -> dict[str, Any]:
        """The whole training state (a collective: every rank contributes its RNG state)."""
        from tsrx.checkpoint import make_checkpoint

        rng = dist_utils.all_gather_objects(rng_state())
        return make_checkpoint(
            self.model_state(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            step=self.step,
            epoch=self.epoch,
            sampler=self.parts.sampler.state_dict(),
            rng={"world_size": self.env.world_size, "ranks": rng},
            config=self.config,
            plugins=plugin_records(),
            metrics={"best": self.best, "skipped_steps": self.skipped},
            callbacks=self.callbacks.state_dict(),
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        model_state = {k: v for k, v in state["model"].items() if not k.startswith("combiner.")}
        combiner_state = {
            k[len("combiner.") :]: v for k, v in state["model"].items() if k.startswith("combiner.")
        }
        self.model.load_state_dict(model_state)
        self.combiner.load_state_dict(combiner_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.parts.sampler.load_state_dict(state["sampler"])
        metrics = state.get("metrics") or {}
        self.best = dict(metrics.get("best") or {})
        self.skipped = int(metrics.get("skipped_steps", 0))
        self.callbacks.load_state_dict(state.get("callbacks") or {}, LAST)
        rng = state.get("rng") or {}
        if rng.get("world_size") == self.env.world_size:
            set_rng_state(rng["ranks"][self.env.rank])
        else:
            log.warning(
                "checkpoint was written by %s process(es), this run has %d: random "
                "streams are reseeded, so the rest of the run is not bit-identical",
                rng.get("world_size"),
                self.env.world_size,
            )

    def save_last(self) -> None:
        state = self.state_dict()
        if self.env.is_main:
            from tsrx.checkpoint import save_checkpoint

            save_checkpoint(self.run_dir / LAST, state)
        self.callbacks.on_checkpoint(self, self.run_dir / LAST)

    def resume(self, path: Path) -> None:
        from tsrx.checkpoint import detect_format, load_checkpoint

        state = load_checkpoint(path, map_location=self.device)
        try:
            if detect_format(state) != "tsrx":
                raise TsrxError("it is not a tsrx training checkpoint")
            self.load_state_dict(state)
        except (TsrxError, RuntimeError, KeyError, ValueError, TypeError) as exc:
            said = " ".join(str(exc).split()) or type(exc).__name__
            raise TsrxError(
                f"{path}: cannot resume this run from it: {said[:400]}. It does not hold this "
                f"run's training state (written by a different model or config?). Move it aside "
                f"(mv {path} {path}.bad) to train from scratch, or restart the run with "
                "`tsrx train/submit --force`"
            ) from None
        log.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)
        self._check_continuation(path, state)
        self.run_log.forget_after(self.step)

    def _check_continuation(self, path: Path, state: dict[str, Any]) -> None:
        """A run continued to another ``train.steps`` (``tsrx train --resume``): refuse fewer
        steps than are done; warn when the learning-rate schedule depends on the total, since
        the steps done followed the old one."""
        total = self.train_cfg["steps"]
        saved = ((state.get("config") or {}).get("train") or {}).get("steps")
        if self.step > total:
            raise TsrxError(
                f"{path} is at step {self.step}, past train.steps = {total}: a run cannot be "
                f"shortened; set train.steps >= {self.step}"
            )
        if saved is None or saved == total:
            return
        log.info("continuing a %d-step run from step %d to step %d", saved, self.step, total)
        if _schedule_depends_on_total(self.config, saved, total, self.step):
            log.warning(
                "[sched] %s depends on train.steps: steps 1-%d followed the %d-step schedule, "
                "the rest follows the %d-step one, so this run is not the one that trains %d "
                "steps from the start (a constant schedule continues exactly)",
                self.config["sched"].get("type"),
                self.step,
                saved,
                total,
                total,
            )

    def close(self) -> None:
        """Drop the DDP wrapper and optimizer before the process group goes (see distributed)."""
        self.run_log.close()
        # dropped for good: the trainer is not used after close
        self.forward = self.step_module = self.loss_module = None  # type: ignore[assignment]
        self.optimizer = self.scheduler = None  # type: ignore[assignment]
        self.parts = None  # type: ignore[assignment]

    # -- files of the run directory -------------------------------------------------------------
    def _record_start(self) -> None:
        self.run_log.append(
            {
                "kind": "run",
                "step": self.step,
                "tasks": self.parts.tasks,
                "losses": self.parts.loss_tables,
                "combiner": self.combiner_description(),
                "world_size": self.env.world_size,
                "batch_size": self.global_batch,
                "batch_size_per_rank": self.parts.batch_size_per_rank,
                "judge": self.parts.judges[0].description if self.parts.judges else None,
                "judges": {j.name: j.description for j in self.parts.judges},
                "resumed": self.step > 0,
                "callbacks": self.callbacks.describe(),
                # parameters (not buffers) per part, frozen ones included: the report's column
                "parameters": {
                    name: sum(p.numel() for p in part.parameters())
                    for name, part in self.model.named_children()
                },
            }
        )

    def combiner_description(self) -> dict[str, Any]:
        describe = getattr(self.combiner, "describe", None)
        return describe() if describe else {"type": type(self.combiner).__name__}

    def _log_train(self, out: dict[str, Any], rate: float) -> None:
        combiner = {"type": self.combiner_description()["type"]}
        combiner.update({k: v for k, v in out["combiner"].items() if k not in out["terms"]})
        self.run_log.train(
            {
                "kind": "train",
                "step": self.step,
                "epoch": self.epoch,
                "loss": out["loss"],
                "terms": out["terms"],
                "lr": self._lr(),
                "samples_per_s": rate,
                "combiner": combiner,
                "skipped_steps": self.skipped,
            }
        )

    def write_summary(self, final: dict[str, Any] | None, state: str) -> dict[str, Any]:
        summary = {
            "state": state,
            "step": self.step,
            "total_steps": self.train_cfg["steps"],
            "best": {
                name: {
                    "step": b["step"],
                    "file": b["filename"],
                    "result": b["result"],
                    **({"judge": b["judge"]} if "judge" in b else {}),
                }
                for name, b in self.best.items()
            },
            "final": final,
            "tasks": self.parts.tasks,
            "losses": self.parts.loss_tables,
            "combiner": self.combiner_description(),
            "skipped_steps": self.skipped,
            "world_size": self.env.world_size,
            "plugins": plugin_records(),
            # made by data.synth / tsrx data synth: every table marks it (not TextZoom)
            "synthetic_data": is_synthetic((self.config.get("data") or {}).get("root", "")),
            # what the selectors chose on: [data.val], the held-out training images, or test
            "validation": validation_record(self.config.get("data") or {}),
        }
        if self.env.is_main:
            atomic_json(self.run_dir / SUMMARY, summary)
        return summary
