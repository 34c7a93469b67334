"""Find the runs of an experiment and read what they recorded (docs/architecture.md, run directory).

A report starts from an experiment TOML (its runs, in grid order, including those not
started yet) or from a folder: one run directory, an experiment's folder of runs, or a
runs folder holding experiments. Nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsrx.config.load import get_dotted
from tsrx.engine import result_cache as cache
from tsrx.errors import TsrxError
from tsrx.report.diff import flatten

if TYPE_CHECKING:
    from tsrx.launch.status import RunStatus
from tsrx.runfiles import (
    CONFIG,
    EVAL_DIR,
    LOGS_DIR,
    RUN_FILES,
    SUBMITIT_DIR,
    SUMMARY,
    DamagedRunFile,
    read_config,
    read_meta,
    read_metrics,
    read_status,
    read_summary,
)


def _noted(read: Any, run_dir: Path, problems: list[str]) -> Any:
    """``read(run_dir)`` (a reader of tsrx.runfiles); a damaged file is noted, read as None."""
    try:
        return read(run_dir)
    except DamagedRunFile as exc:
        problems.append(str(exc))
        return None


@dataclass
class Selected:
    """One checkpoint selector of a run: its name in summary.json and its checkpoint file."""

    name: str
    filename: str

    @property
    def stem(self) -> str:
        return Path(self.filename).stem


@dataclass
class Result:
    """An evaluation result and where it came from: a test result, or the selector's validation one."""

    values: dict[str, Any]
    source: str  # "test" or "val"
    where: str  # the file (and key) it was read from
    verified: bool = True
    # a validation result whose splits are the test splits ([data.val] absent or equal to
    # [data.test]): test-split values, but the selector chose its checkpoint on them
    on_test_splits: bool = False
    # its per-image records (tsrx.records), None when the evaluation predates them
    records: Path | None = None


@dataclass
class Run:
    path: Path
    name: str
    experiment: str
    point: dict[str, Any]
    config: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    # where the run stands, from tsrx.launch.status: the one reader of a run's state, so
    # `tsrx report` and `tsrx status` never disagree (a killed run is failed in both)
    lifecycle: RunStatus | None = None

    @property
    def exists(self) -> bool:
        return self.path.is_dir()

    def _lifecycle(self) -> RunStatus:
        if self.lifecycle is None:
            from tsrx.launch.status import run_status

            self.lifecycle = run_status(self.path)
        return self.lifecycle

    @property
    def state(self) -> str:
        """``tsrx status``'s state (completed, running, failed, pending, not submitted...), or
        missing (never launched)."""
        return self._lifecycle().state if self.exists else "missing"

    def state_note(self) -> str:
        if not self.exists:
            return "not launched"
        row = self._lifecycle()
        if row.state == "running":
            return (
                f"running, step {row.step}/{row.total_steps}" if row.step is not None else "running"
            )
        if row.state in ("failed", "damaged"):
            err = str(row.error or "").strip().splitlines()
            return row.state + (f": {err[-1][:80]}" if err else "")
        return row.label

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl records (tsrx.runfiles.read_metrics); damaged lines are noted."""
        try:
            records, problems = read_metrics(self.path)
        except DamagedRunFile as exc:
            records, problems = [], [str(exc)]
        self.problems += [p for p in problems if p not in self.problems]
        return records

    def selectors(self) -> list[Selected]:
        """Selectors named by the config, summary.json and cached eval files, in that order."""
        seen: dict[str, Selected] = {}
        for entry in ((self.config or {}).get("train") or {}).get("selectors") or []:
            sel = _selector_of(entry)
            if sel is not None:
                seen.setdefault(sel.name, sel)
        for name, best in ((self.summary or {}).get("best") or {}).items():
            filename = next(
                (best[k] for k in ("file", "filename", "checkpoint") if (best or {}).get(k)), None
            )
            sel = Selected(name, Path(filename).name if filename else f"{name}_model.pth")
            seen.setdefault(name, sel)
        eval_dir = self.path / EVAL_DIR
        if eval_dir.is_dir():
            for f in sorted(eval_dir.glob("*-*.json")):
                stem = f.stem.rsplit("-", 1)[0]
                if not any(s.stem == stem for s in seen.values()):
                    name = stem[: -len("_model")] if stem.endswith("_model") else stem
                    seen.setdefault(name, Selected(name, f"{stem}.pth"))
        return list(seen.values())

    def result(
        self, sel: Selected, eval_overrides: dict[str, Any] | None = None
    ) -> tuple[Result | None, str]:
        """The run's result for a selector: a cached test result, else the selector's validation result."""
        ckpt = self.path / sel.filename
        settings = cache.eval_settings(self.config or {}, eval_overrides)
        values, where, how = cache.lookup(self.path, sel.stem, ckpt, settings)
        if values is not None and where is not None:  # lookup gives both or neither
            from tsrx.runfiles import records_beside

            rec = records_beside(Path(where))
            return Result(
                values,
                "test",
                str(where),
                how == "verified",
                records=rec if rec.is_file() else None,
            ), ""
        best = ((self.summary or {}).get("best") or {}).get(sel.name)
        if isinstance(best, dict) and isinstance(best.get("result"), dict):
            step = best.get("step")
            return Result(
                best["result"],
                "val",
                f"{self.path / SUMMARY} best.{sel.name} (step {step})",
                on_test_splits=validates_on_test(self.config),
                records=_validation_records(self.path, step),
            ), how
        return None, how


def _validation_records(run_dir: Path, step: Any) -> Path | None:
    from tsrx.runfiles import validation_records

    if not isinstance(step, int):
        return None
    path = validation_records(run_dir, step)
    return path if path.is_file() else None


def validates_on_test(config: dict[str, Any] | None) -> bool:
    """Whether a run validated on its test splits (the trainer's rule: no ``[data.val]`` and no
    ``data.holdout``, or the same tables as ``[data.test]``); False when the config is unknown."""
    from tsrx.data.holdout import validation_source

    if not isinstance(config, dict):
        return False
    data = config.get("data") or {}
    return isinstance(data, dict) and validation_source(data) in ("test", "none")


def _selector_of(entry: Any) -> Selected | None:
    """Name and file of a ``train.selectors`` entry, following the built-in naming rule
    (``<name>_model.pth``; ``best`` names itself ``best_<metric>`` or ``best_<split>_<metric>``)."""
    if isinstance(entry, str):
        return Selected(entry, f"{entry}_model.pth")
    if not isinstance(entry, dict):
        return None
    name = entry.get("name")
    if not name and entry.get("type") == "best" and entry.get("metric"):
        split = entry.get("split", "average")
        name = (
            f"best_{entry['metric']}" if split == "average" else f"best_{split}_{entry['metric']}"
        )
    if not name:
        name = str(entry.get("type", ""))
    if not name:
        return None
    return Selected(name, entry.get("filename") or f"{name}_model.pth")


def read_run(
    path: Path,
    *,
    name: str | None = None,
    experiment: str | None = None,
    point: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Run:
    """Everything a run directory recorded (absent files stay None; unreadable ones are noted)."""
    path = Path(path)
    problems: list[str] = []
    meta = _noted(read_meta, path, problems) or {}
    if (path / CONFIG).is_file():
        config = _noted(read_config, path, problems)
    rec_point = meta.get("point")
    return Run(
        path=path,
        name=name or meta.get("run") or path.name,
        experiment=experiment or meta.get("experiment") or path.parent.name,
        point=dict(rec_point) if isinstance(rec_point, dict) else dict(point or {}),
        config=config,
        meta=meta,
        status=_noted(read_status, path, problems),
        summary=_noted(read_summary, path, problems),
        problems=problems,
    )


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in RUN_FILES)


def _run_dirs_under(folder: Path) -> list[Path]:
    kids = sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and p.name not in (EVAL_DIR, LOGS_DIR, SUBMITIT_DIR)
    )
    runs = [p for p in kids if is_run_dir(p)]
    if runs:
        return runs
    return [g for k in kids for g in sorted(k.iterdir()) if is_run_dir(g)]


@dataclass
class Collection:
    """The runs a report covers, and the grid axes (dotted keys) in their declared order."""

    source: str
    runs: list[Run]
    axes: list[str]
    value_order: dict[str, list[str]] = field(default_factory=dict)


def collect(
    target: str | Path, runs_dir: str | Path | None = None, overrides: list[str] | None = None
) -> Collection:
    """Runs of an experiment TOML (every grid point, launched or not) or of a folder."""
    target = Path(target)
    if target.is_file() and target.suffix == ".toml" and target.name != CONFIG:
        return _from_experiment(target, runs_dir, overrides)
    if target.is_file() and target.name == CONFIG:
        target = target.parent
    if not target.exists():
        raise TsrxError(f"{target}: no such experiment file or runs folder")
    if not target.is_dir():
        raise TsrxError(f"{target}: expected an experiment .toml file or a runs folder")
    paths = [target] if is_run_dir(target) else _run_dirs_under(target)
    if not paths:
        raise TsrxError(
            f"{target}: no run directories found (a run directory holds {', '.join(RUN_FILES)})"
        )
    runs = [read_run(p) for p in paths]
    _states(runs)
    axes: list[str] = []
    for r in runs:
        for k in r.point:
            if k not in axes:
                axes.append(k)
    if not axes:
        axes = _differing_keys([r.config for r in runs if r.config is not None])
        for r in runs:
            r.point = {k: get_dotted(r.config or {}, k) for k in axes}
    return Collection(str(target), runs, axes)


def _from_experiment(
    path: Path, runs_dir: str | Path | None, overrides: list[str] | None
) -> Collection:
    from tsrx.config.experiment import load_experiment

    exp = load_experiment(path, overrides or [])
    runs: list[Run] = []
    axes: list[str] = []
    order: dict[str, list[str]] = {}
    for spec in exp.runs:
        base = (
            Path(runs_dir)
            if runs_dir
            else Path((spec.config.get("launcher") or {}).get("runs_dir", "runs"))
        )
        folder = base / spec.experiment / spec.name
        run = read_run(
            folder,
            name=spec.name,
            experiment=spec.experiment,
            point=spec.point,
            config=spec.config if not (folder / CONFIG).is_file() else None,
        )
        if not run.point:
            run.point = dict(spec.point)
        runs.append(run)
        # runs made with --new sit beside their run as <run>~2, <run>~3...
        for extra in sorted(folder.parent.glob(f"{spec.name}~*")) if folder.parent.is_dir() else []:
            if is_run_dir(extra):
                runs.append(read_run(extra, experiment=spec.experiment, point=spec.point))
        for k, v in spec.point.items():
            if k not in axes:
                axes.append(k)
            order.setdefault(k, [])
            if value_label(v) not in order[k]:
                order[k].append(value_label(v))
    _states(runs)
    return Collection(str(path), runs, axes, order)


def _states(runs: list[Run]) -> None:
    """Every run's state with one scheduler query for all (tsrx.launch.status.collect)."""
    from tsrx.launch.status import collect as status_of

    present = [r for r in runs if r.exists]
    for r, row in zip(present, status_of([r.path for r in present])):
        r.lifecycle = row


def _differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Dotted keys whose values differ between configs (the implicit grid of a runs folder)."""
    if len(configs) < 2:
        return []
    flats = [flatten(c) for c in configs]
    keys = sorted(set().union(*flats))
    return [
        k
        for k in keys
        if k != "name"
        and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1
    ]


def value_label(v: Any) -> str:
    """How a grid value reads in a table: ``sidernn+mlp``, ``avg``, ``0.001``."""
    if v is None:
        return "-"
    if isinstance(v, dict):
        return str(v.get("type", json.dumps(v, sort_keys=True)))
    if isinstance(v, (list, tuple)):
        return "+".join(value_label(x) for x in v)
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def axis_label(key: str, keys: list[str]) -> str:
    """Short name of a grid key: ``model.head.type`` -> ``head`` (longer when two would clash)."""

    def short(k: str) -> str:
        parts = k.split(".")
        return parts[-2] if parts[-1] == "type" and len(parts) > 1 else parts[-1]

    if any(short(k) == short(key) for k in keys if k != key):
        parts = key.split(".")
        return ".".join(parts[:-1] if parts[-1] == "type" else parts)
    return short(key)
