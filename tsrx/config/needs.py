"""Stage dependencies: ``needs`` names the upstream runs an experiment loads weights from.

    needs = { sr = "sr_pretrain.toml:best_psnr", rec = "rec_finetune.toml:best_acc" }
    [model.init]
    sr = "@sr"                 # the best_psnr_model.pth of the matching sr_pretrain run
    recognizer = "@rec"
    head = "@rec"

``FILE:SELECTOR``: FILE is relative to the file that sets it; SELECTOR is a checkpoint
selector of the upstream run (a name in its ``train.selectors``) or ``last``.
``FILE:VARIANT:SELECTOR`` takes only the runs of FILE's ``[[variants]]`` table of that
name. ``@NAME`` may stand for a checkpoint in ``model.init.*`` and ``eval.judge_weights``.

Which upstream runs:

- A need that an ``@NAME`` loads from is one run: the one whose grid point agrees with
  this run's resolved config on every key the upstream grid varies (a joint run with
  ``model.head.type = "mlp"`` loads the ``head=mlp`` run of a stage-2 grid over heads).
  Exactly one must fit. Variants are told apart by name only (a variant that sets nothing
  would fit every run, one that sets ``optim.lr`` would be left out for a key that says
  nothing about the weights): with several variants, the need names one.
- A need that nothing refers to only orders the stages: the run waits on every run of FILE
  (of VARIANT, when named), each variant and grid point.

Everything is checked while the experiment is loaded, before anything is submitted:
the syntax, that the file exists and loads, cycles, the selector, the ``@NAME``
references, and that the parts loaded agree with the upstream's (a head of another
type, or an SR backbone of another size, would not take the weights). The resolved
config holds the checkpoint paths instead of ``@NAME`` and no ``needs`` table, so a run
directory's ``config.toml`` stays self-contained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsrx import runfiles
from tsrx.config.load import get_dotted
from tsrx.config.schema import RawValue
from tsrx.errors import ConfigError, ConfigIssue, dedupe_issues, suggest

REF = "@"
LAST = "last"
# --set keys that also apply to upstream stages: where the data is, where and how jobs run.
SHARED_TABLES = ("data.", "launcher.", "slurm.")
LOADED_PARTS = ("sr", "recognizer", "head")


@dataclass
class Need:
    """One entry of ``needs`` as written."""

    name: str
    file: Path  # the upstream experiment file (absolute)
    select: str  # selector name or "last"
    text: str  # as written, for messages
    variant: str | None = None  # FILE:VARIANT:SELECTOR: only that variant's runs
    file_text: str = ""  # FILE as written, for the hints of messages


@dataclass
class Upstream:
    """A need resolved for one downstream run: the upstream run and the checkpoint taken."""

    name: str
    file: Path
    experiment: str
    run: str
    run_dir: Path
    select: str
    checkpoint: Path
    spec: Any  # the upstream RunSpec
    loads: bool = True  # an @NAME of the downstream run loads its checkpoint (else: ordering)

    def record(self) -> dict[str, Any]:
        """What meta.json keeps of it (``tsrx status FILE`` reads this, no torch)."""
        return {
            "file": str(self.file),
            "experiment": self.experiment,
            "run": self.run,
            "run_dir": str(self.run_dir.absolute()),
            "select": self.select,
            "checkpoint": str(self.checkpoint),
        }


def parse_needs(
    value: Any, prov: dict[str, str], file: str
) -> tuple[list[Need], list[ConfigIssue]]:
    """``needs`` table -> Needs; syntax and missing files are issues."""
    issues: list[ConfigIssue] = []
    if not isinstance(value, dict):
        return [], [
            ConfigIssue(
                file, "needs", f'expected a table name -> "FILE.toml:SELECTOR", got {value!r}'
            )
        ]
    needs = []
    for name, text in value.items():
        where = prov.get(f"needs.{name}") or prov.get("needs") or file
        key = f"needs.{name}"
        if not isinstance(text, str) or ":" not in text:
            issues.append(
                ConfigIssue(
                    where,
                    key,
                    f'expected "FILE.toml:SELECTOR" (e.g. '
                    f'"sr_pretrain.toml:best_psnr"), got {text!r}',
                )
            )
            continue
        path_text, _, select = text.rpartition(":")
        variant = None
        path = (Path(where).parent / path_text).resolve()
        if not path.is_file() and ":" in path_text:  # FILE:VARIANT:SELECTOR
            file_text, _, variant_text = path_text.rpartition(":")
            with_variant = (Path(where).parent / file_text).resolve()
            if with_variant.is_file() and variant_text:
                path_text, variant, path = file_text, variant_text, with_variant
        if not path_text or not select:
            issues.append(
                ConfigIssue(
                    where,
                    key,
                    f'expected "FILE.toml:SELECTOR" or "FILE.toml:VARIANT:SELECTOR", got {text!r}',
                )
            )
            continue
        if not path.is_file():
            issues.append(
                ConfigIssue(
                    where, key, f"upstream experiment {path_text!r} not found (looked at {path})"
                )
            )
            continue
        needs.append(Need(name, path, select, text, variant, path_text))
    return needs, issues


def _refs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted key, need name) of every ``@NAME`` value a resolved config holds."""
    out = []
    for part, value in (get_dotted(config, "model.init") or {}).items():
        if isinstance(value, str) and value.startswith(REF):
            out.append((f"model.init.{part}", value[len(REF) :]))
    judge = get_dotted(config, "eval.judge_weights")
    if isinstance(judge, str) and judge.startswith(REF):
        out.append(("eval.judge_weights", judge[len(REF) :]))
    return out


def _selector_files(config: dict[str, Any]) -> dict[str, str]:
    """Selector name -> checkpoint file name of a resolved config (plus ``last``)."""
    from tsrx.registry import SELECTORS

    out = {LAST: runfiles.LAST}
    for i, s in enumerate((config.get("train") or {}).get("selectors") or []):
        try:
            sel = SELECTORS.build({"type": s} if isinstance(s, str) else s, f"train.selectors[{i}]")
        except Exception:  # the upstream's own validation reports it
            continue
        out[sel.name] = sel.filename
    return out


def _fits(down: dict[str, Any], up_spec: Any) -> bool:
    """Whether ``down`` agrees with the upstream run on every key the upstream grid varies.

    A variant's keys are not compared: a variant that sets nothing would fit every run, and
    one that sets ``optim.lr`` would be told apart by a key that says nothing about the
    weights. Variants are chosen by name (``FILE:VARIANT:SELECTOR``).
    """
    missing = object()
    for key in up_spec.axes:
        here = get_dotted(down, key, missing)
        if here is not missing and here != get_dotted(up_spec.config, key, missing):
            return False
    return True


def _contradictions(key: str, down: dict[str, Any], up: dict[str, Any], up_label: str) -> list[str]:
    """Why the weights of ``up`` would not fit the part that ``key`` loads in ``down``."""
    part = key.rsplit(".", 1)[-1]
    if key == "eval.judge_weights":
        return (
            []
            if get_dotted(up, "model.recognizer")
            else [f"{up_label} has no [model.recognizer] to judge with"]
        )
    parts = LOADED_PARTS if part == "whole" else (part,)
    problems = []
    for p in parts:
        mine, theirs = get_dotted(down, f"model.{p}"), get_dotted(up, f"model.{p}")
        if mine is None:
            if part != "whole":
                problems.append(f"this run has no [model.{p}] to load it into")
            continue
        if theirs is None:
            problems.append(f"{up_label} has no [model.{p}]")
            continue
        for k in sorted(set(mine) | set(theirs)):
            if mine.get(k) != theirs.get(k):
                problems.append(
                    f"model.{p}.{k} is {mine.get(k)!r} here but {theirs.get(k)!r} in "
                    f"{up_label}, whose weights it loads"
                )
    return problems


def upstream_overrides(exp: Any, sets: dict[str, Any]) -> dict[str, Any]:
    """The ``--set`` overrides an upstream stage is loaded with: the shared tables', plus this
    file's launcher type and runs folder (one study, one launcher, one runs folder)."""
    shared = {k: v for k, v in sets.items() if k.startswith(SHARED_TABLES)}
    if exp.runs:
        lau = exp.runs[0].config["launcher"]
        for key in ("type", "runs_dir"):
            shared.setdefault(f"launcher.{key}", RawValue(json.dumps(str(lau[key]))))
    return shared


def cycle_issue(need: Need, stack: tuple[Path, ...], here: Path, file: str) -> ConfigIssue | None:
    """The issue when loading ``need`` would close a cycle of stage dependencies."""
    if need.file not in (*stack, here):
        return None
    chain = " -> ".join(str(p) for p in (*stack, here, need.file))
    return ConfigIssue(file, f"needs.{need.name}", f"stage dependencies form a cycle: {chain}")


def _variant_issue(need: Need, up_exp: Any, file: str) -> ConfigIssue | None:
    """The issue when ``FILE:VARIANT:SELECTOR`` names no variant of FILE."""
    if need.variant is None:
        return None
    variants = list(dict.fromkeys(u.variant for u in up_exp.runs if u.variant is not None))
    if need.variant in variants:
        return None
    has = (
        f"its variants: {', '.join(variants)}"
        if variants
        else f'it has no [[variants]]; write "{need.file_text}:{need.select}"'
    )
    return ConfigIssue(
        file,
        f"needs.{need.name}",
        f"{need.text}: {need.variant!r} names no variant of {need.file.name}"
        f"{suggest(need.variant, variants)}; {has}",
    )


def _selector_issue(need: Need, up_exp: Any, files: dict[str, str]) -> str:
    """An unknown checkpoint selector; a hint when it is a variant's name."""
    variants = [u.variant for u in up_exp.runs]
    hint = (
        f"; {need.select!r} is a variant of {need.file.name}: write "
        f'"{need.file_text}:{need.select}:SELECTOR"'
        if need.select in variants
        else ""
    )
    return (
        f"{need.text}: unknown checkpoint selector {need.select!r}"
        f"{suggest(need.select, list(files))}; that run keeps {', '.join(files)} "
        f"(its train.selectors, and last){hint}"
    )


def _fit_issue(need: Need, pool: list[Any], fits: list[Any]) -> str:
    """Why a need whose checkpoint is loaded does not resolve to exactly one upstream run."""
    if not fits:
        names = ", ".join(u.name for u in pool)
        return f"{need.text}: no run of it fits; its runs: {names}"
    names = ", ".join(u.name for u in fits)
    variants = list(dict.fromkeys(u.variant for u in fits if u.variant is not None))
    if len(variants) > 1:
        return (
            f"{need.text}: {REF}{need.name} loads the weights of one run, but {len(fits)} runs "
            f"of {need.file} could be it ({names}): its [[variants]] {', '.join(variants)} "
            f'are told apart by name only; write "{need.file_text}:VARIANT:{need.select}", '
            f'e.g. "{need.file_text}:{variants[0]}:{need.select}"'
        )
    return (
        f"{need.text}: {len(fits)} of its runs fit ({names}); set the keys its grid varies "
        f"here, or give it one run; its runs: {names}"
    )


def resolve_needs(exp: Any, needs: list[Need], loaded: dict[Path, Any], file: str) -> None:
    """Pick each run's upstream runs, check them, put checkpoint paths in place of ``@NAME``.

    ``loaded``: upstream file -> its loaded Experiment (tsrx.config.experiment loads them, so
    this module never calls back into it). Sets ``exp.upstream`` (need name -> upstream
    Experiment), each run's ``upstream`` (need name -> its one run) and ``waits`` (every
    upstream run it waits for). Raises ConfigError listing every problem.
    """
    issues: list[ConfigIssue] = []
    exp.upstream = {n.name: loaded[n.file] for n in needs}
    by_name = {n.name: n for n in needs}
    bad_variant = set()
    for need in needs:
        issue = _variant_issue(need, exp.upstream[need.name], file)
        if issue is not None:
            issues.append(issue)
            bad_variant.add(need.name)
    for spec in exp.runs:
        tag = "" if spec.name == "main" else f" [run {spec.name}]"
        spec.upstream = {}
        spec.waits = []
        refs = _refs(spec.config)
        loaded_by_ref = {name for _, name in refs}
        for need in needs:
            if need.name in bad_variant:
                continue
            up_exp = exp.upstream[need.name]
            pool = [u for u in up_exp.runs if need.variant in (None, u.variant)]
            loads = need.name in loaded_by_ref
            if not any(need.select in _selector_files(u.config) for u in pool):
                files = _selector_files(pool[0].config)
                issues.append(
                    ConfigIssue(
                        file, f"needs.{need.name}", _selector_issue(need, up_exp, files) + tag
                    )
                )
                continue
            if loads:  # its checkpoint is loaded: exactly one run
                chosen = [u for u in pool if _fits(spec.config, u)]
                if len(chosen) != 1:
                    why = _fit_issue(need, pool, chosen)
                    issues.append(ConfigIssue(file, f"needs.{need.name}", f"{why}{tag}"))
                    continue
            else:  # it only orders the stages: every run of it (of its variant, when named)
                chosen = pool
            ups = []
            for up in chosen:
                files = _selector_files(up.config)
                if need.select not in files:
                    issues.append(
                        ConfigIssue(
                            file, f"needs.{need.name}", _selector_issue(need, up_exp, files) + tag
                        )
                    )
                    break
                run_dir = Path(up.config["launcher"]["runs_dir"]) / up_exp.name / up.name
                ups.append(
                    Upstream(
                        need.name,
                        need.file,
                        up_exp.name,
                        up.name,
                        run_dir,
                        need.select,
                        run_dir / files[need.select],
                        up,
                        loads,
                    )
                )
            else:
                spec.waits.extend(ups)
                if len(ups) == 1:
                    spec.upstream[need.name] = ups[0]
        for key, name in refs:
            if name not in by_name:
                issues.append(
                    ConfigIssue(
                        spec.provenance.get(key, file),
                        key,
                        f"{REF}{name} names no entry of needs"
                        f"{suggest(name, list(by_name))}; needs has: "
                        f"{', '.join(by_name) or 'nothing'}{tag}",
                    )
                )
                continue
            up = spec.upstream.get(name)
            if up is None:
                continue  # already reported
            label = f"{up.experiment}/{up.run} ({by_name[name].file.name})"
            for problem in _contradictions(key, spec.config, up.spec.config, label):
                issues.append(ConfigIssue(file, key, f"{REF}{name}: {problem}{tag}"))
            parent, _, leaf = key.rpartition(".")
            get_dotted(spec.config, parent)[leaf] = str(up.checkpoint)
    if issues:
        raise ConfigError(dedupe_issues(issues))


def records(spec: Any) -> dict[str, dict[str, Any]]:
    """What a run's meta.json keeps of its upstream runs: need name -> record, or
    ``NAME:RUN`` -> record for each run of a need that waits on several."""
    count: dict[str, int] = {}
    for u in spec.waits:
        count[u.name] = count.get(u.name, 0) + 1
    return {(u.name if count[u.name] == 1 else f"{u.name}:{u.run}"): u.record() for u in spec.waits}
