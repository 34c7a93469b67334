"""From an experiment file to validated, fully resolved runs.

Order of precedence: defaults, then the file (with its ``extends``), then the grid
point or variant, then ``--set`` on the command line. Every problem found in any
run is reported at once.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsrx.config.load import Provenance, deep_merge, flatten_grid, load_with_extends, set_dotted
from tsrx.config.needs import (
    Need,
    Upstream,
    cycle_issue,
    parse_needs,
    resolve_needs,
    upstream_overrides,
)
from tsrx.config.schema import (
    TRAINER_ENTRY,
    Component,
    RawValue,
    build_dataclass,
    check_table,
    component_of,
    dataclass_fields,
    parse_raw,
    unwrap_optional,
)
from tsrx.config.sections import TOP_LEVEL_KEYS, all_sections
from tsrx.errors import ConfigError, ConfigIssue, TsrxError, dedupe_issues, suggest
from tsrx.plugins import load_named_plugins
from tsrx.registry import ALL, check_components, component_defaults, fill_components

CLI = "<command line>"
# Runs one experiment file may expand to (variants x grid points), counted before expanding.
# Each run is validated and, when trained, is a job: past this a grid is almost surely a typo
# (an axis of 100 values instead of 10), and expanding it costs minutes to hours.
MAX_RUNS = 1000


@dataclass
class RunSpec:
    """One point of an experiment: its name, what distinguishes it, its resolved config."""

    experiment: str
    name: str
    point: dict[str, Any]
    config: dict[str, Any]
    provenance: Provenance = field(default_factory=dict)
    # need name -> the one upstream run of that need (tsrx.config.needs.Upstream)
    upstream: dict[str, Upstream] = field(default_factory=dict)
    variant: str | None = None  # the name of its [[variants]] table, if any
    axes: tuple[str, ...] = ()  # the keys the file's [grid] varies (needs matches on these)
    # every upstream run it waits for: one per need it loads from, every run of a need that
    # only orders the stages
    waits: list[Upstream] = field(default_factory=list)

    @property
    def plugins(self) -> list[str]:
        return list(self.config.get("plugins", []))


@dataclass
class Experiment:
    name: str
    file: Path
    runs: list[RunSpec]
    upstream: dict[str, Experiment] = field(default_factory=dict)  # need name -> its Experiment


def parse_overrides(items: list[str]) -> dict[str, RawValue]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TsrxError(f"--set {item!r}: expected table.key=value")
        out[key.strip()] = RawValue(value.strip())
    return out


def _label(key: str, all_keys: list[str]) -> str:
    parts = key.split(".")
    if parts[-1] == "type" and len(parts) > 1:
        parts = parts[:-1]
    short = parts[-1]
    clashes = [
        k
        for k in all_keys
        if k != key
        and (k.split(".")[-2] if k.endswith(".type") and "." in k else k.split(".")[-1]) == short
    ]
    return ".".join(parts) if clashes else short


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        return v.get("type", "table") if isinstance(v.get("type"), str) else "table"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v).replace("/", "_").replace(" ", "_")


# the longest name of one directory on Linux file systems (ext4, xfs, NFS), in bytes
NAME_MAX_BYTES = 255


def run_name(point: dict[str, Any], variant: str | None) -> str:
    """Readable and deterministic: ``variant,head=mlp,combiner=uncertainty-1a2b3c4d``.

    A point with many or long values would name a directory the file system refuses
    ("File name too long", mid-study): past ``NAME_MAX_BYTES`` its readable part is cut
    (``...``); the digest of the whole point keeps every name distinct.
    """
    if not point and variant is None:
        return "main"
    keys = [k for k in point if k != "__variant__"]
    parts = ([variant] if variant else []) + [f"{_label(k, keys)}={_fmt(point[k])}" for k in keys]
    digest = hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:8]
    readable, suffix = ",".join(parts), "-" + digest
    room = NAME_MAX_BYTES - len(suffix)
    if len(readable.encode()) > room:
        readable = readable.encode()[: room - 3].decode(errors="ignore") + "..."
    return readable + suffix


def dir_name_problem(name: str) -> str | None:
    """None if ``name`` can be one directory under ``--runs-dir``, else why not.

    Experiment and variant names become directories (``runs/<experiment>/<run>``); a name
    with a path separator, ``..`` or an absolute path would put a run outside ``--runs-dir``.
    Refused rather than cleaned: a cleaned name would no longer be the one the user wrote
    and looks up in ``--only`` and reports.
    """
    if not name.strip():
        return "is empty"
    if "/" in name or "\\" in name:
        return "contains a path separator ('/' or '\\')"
    if name in (".", ".."):
        return f"is {name!r}"
    if any(ord(c) < 32 for c in name):
        return "contains a control character"
    if len(name.encode()) > NAME_MAX_BYTES:
        return f"is {len(name.encode())} bytes long, a directory name at most {NAME_MAX_BYTES}"
    return None


def _name_issue(file: str, key: str, name: str, what: str) -> ConfigIssue | None:
    why = dir_name_problem(name)
    if why is None:
        return None
    return ConfigIssue(
        file,
        key,
        f"{what} {name!r} {why}: it names a directory under --runs-dir "
        "(runs/<experiment>/<run>); use a plain name such as 'sr_small'",
    )


def schema_knows(dotted: str) -> str | None:
    """None if ``dotted`` can name a config key, else why not (for grid and --set keys)."""
    sections = all_sections()
    parts = dotted.split(".")
    if parts[0] in TOP_LEVEL_KEYS:
        return None if len(parts) == 1 else f"{parts[0]!r} has no sub-keys"
    if parts[0] not in sections:
        return f"no table [{parts[0]}]{suggest(parts[0], sections)}"
    schema: Any = sections[parts[0]].schema
    for i, p in enumerate(parts[1:], start=1):
        if isinstance(schema, Component) or component_of(schema) is not None:
            return None  # a component's arguments are checked against its signature
        if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
            return None  # inside a free-form table (dict)
        fields = dataclass_fields(schema)
        if p not in fields:
            here = ".".join(parts[:i])
            return f"[{here}] has no key {p!r}{suggest(p, fields)}"
        schema = fields[p].annotation
        schema = unwrap_optional(schema)
    return None


def _file_of(key: str, prov: Provenance, default: str) -> str:
    parts = key.replace("[", ".").split(".")
    for i in range(len(parts), 0, -1):
        f = prov.get(".".join(parts[:i]))
        if f:
            return f
    return default


def _expand_points(
    raw: dict[str, Any], file: str
) -> tuple[list[tuple[str | None, dict[str, Any]]], tuple[str, ...], list[ConfigIssue]]:
    """(variant name, point) of every run, the keys the grid varies, and the problems."""
    issues: list[ConfigIssue] = []
    grid = raw.pop("grid", {}) or {}
    variants = raw.pop("variants", []) or []
    if not isinstance(grid, dict):
        issues.append(
            ConfigIssue(file, "grid", f"expected a table of dotted key -> list, got {grid!r}")
        )
        grid = {}
    axes: list[tuple[str, list[Any]]] = []
    for key, values in flatten_grid(grid):
        why = schema_knows(key)
        if why:
            issues.append(ConfigIssue(file, f"grid.{key}", f"names nothing: {why}"))
            continue
        if not isinstance(values, list):
            issues.append(
                ConfigIssue(file, f"grid.{key}", f"expected a list of values, got {values!r}")
            )
            continue
        if not values:
            issues.append(
                ConfigIssue(file, f"grid.{key}", "is an empty list: the grid would have no runs")
            )
            continue
        as_written = [json.dumps(v, sort_keys=True, default=str) for v in values]
        twice = next((v for i, v in enumerate(values) if as_written[i] in as_written[:i]), None)
        if twice is not None:
            issues.append(
                ConfigIssue(
                    file,
                    f"grid.{key}",
                    f"lists {twice!r} twice: both runs would have one name and one directory",
                )
            )
            continue
        axes.append((key, values))
    count = max(len(variants), 1) if isinstance(variants, list) else 1
    for _, values in axes:
        count *= len(values)
    if count > MAX_RUNS:
        # counted, never expanded: validating 10^6 points took hours
        sizes = " x ".join(str(len(v)) for _, v in axes)
        issues.append(
            ConfigIssue(
                file,
                "grid",
                f"{count:,} runs ({max(len(variants), 1) if isinstance(variants, list) else 1}"
                f" variant(s) x {sizes or '1'}): more than the limit of {MAX_RUNS:,} runs per "
                "experiment; split it into files, or shorten the axes",
            )
        )
        return [], (), issues
    vlist: list[tuple[str | None, dict[str, Any]]] = []
    if not isinstance(variants, list):
        issues.append(ConfigIssue(file, "variants", "expected [[variants]] tables"))
        variants = []
    seen = set()
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str):
            issues.append(
                ConfigIssue(file, f"variants[{i}]", 'each [[variants]] needs name = "..."')
            )
            continue
        bad_name = _name_issue(file, f"variants[{i}].name", v["name"], "variant name")
        if bad_name is not None:
            issues.append(bad_name)
            continue
        if v["name"] in seen:
            issues.append(
                ConfigIssue(file, f"variants[{i}].name", f"duplicate variant name {v['name']!r}")
            )
        seen.add(v["name"])
        overrides = {}
        for key, value in flatten_grid({k: x for k, x in v.items() if k != "name"}):
            why = schema_knows(key)
            if why:
                issues.append(ConfigIssue(file, f"variants[{i}].{key}", f"names nothing: {why}"))
            overrides[key] = value
        vlist.append((v["name"], overrides))
    if not vlist:
        vlist = [(None, {})]
    points = []
    for vname, voverrides in vlist:
        for combo in itertools.product(*[vals for _, vals in axes]):
            point = dict(voverrides)
            point.update({k: val for (k, _), val in zip(axes, combo)})
            points.append((vname, point))
    return points, tuple(k for k, _ in axes), issues


def resolve_run(
    raw: dict[str, Any], prov: Provenance, file: str
) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """Validate every table of one run and fill in defaults; returns (config, issues)."""
    sections = all_sections()
    issues: list[ConfigIssue] = []
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in TOP_LEVEL_KEYS:
            expected = TOP_LEVEL_KEYS[key]
            if not isinstance(value, expected) or isinstance(value, bool) and expected is int:
                issues.append(
                    ConfigIssue(
                        _file_of(key, prov, file),
                        key,
                        f"expected {expected.__name__}, got {value!r}",
                    )
                )
            out[key] = value
        elif key not in sections:
            allowed = sorted(set(sections) | set(TOP_LEVEL_KEYS))
            issues.append(
                ConfigIssue(
                    _file_of(key, prov, file),
                    key,
                    f"unknown table or key{suggest(key, allowed)}; allowed: {', '.join(allowed)}",
                )
            )
    for name, sec in sections.items():
        table = raw.get(name)
        if table is not None and not isinstance(table, dict):
            issues.append(
                ConfigIssue(
                    _file_of(name, prov, file), name, f"expected a table [{name}], got {table!r}"
                )
            )
            continue
        if isinstance(sec.schema, Component):
            if table is None or "type" not in table:
                table = deep_merge(sec.default or {}, table or {})
            if not table:
                continue
            for iss in ALL[sec.schema.registry].check(table, name):
                issues.append(ConfigIssue(_file_of(iss.key, prov, file), iss.key, iss.message))
            out[name] = component_defaults(table, sec.schema.registry)
            continue
        fields = dataclass_fields(sec.schema)
        checked, problems = check_table(table or {}, fields, name)
        problems += check_components(checked, sec.schema, name)
        for k, m in problems:
            issues.append(ConfigIssue(_file_of(k, prov, file), k, m))
        if problems:
            out[name] = checked
            continue
        instance = build_dataclass(sec.schema, checked, name)
        # a section may check how its fields fit together (e.g. [model]'s coupling and parts)
        for k, m in getattr(instance, "cross_check", lambda: [])():
            issues.append(ConfigIssue(_file_of(k, prov, file), k, m))
        resolved = dataclasses.asdict(instance)
        out[name] = fill_components(resolved, sec.schema)
    return out, issues


def training_issues(config: dict[str, Any], prov: Provenance, file: str) -> list[ConfigIssue]:
    """What makes a valid config untrainable: checked with the rest by ``tsrx config
    validate``, ``train`` and ``submit``, so a run directory is never created for it.

    Apart from :func:`resolve_run` because a config to evaluate or compose a checkpoint
    with needs no training data.
    """
    entry = (config.get("launcher") or {}).get("entry", TRAINER_ENTRY)
    if entry != TRAINER_ENTRY:
        return []  # a run of another entry point ([launcher] entry) decides what it needs
    issues = []
    model = config.get("model") or {}
    if not model.get("sr") and not model.get("recognizer"):
        issues.append(
            ConfigIssue(
                _file_of("model", prov, file),
                "model",
                "nothing to build or train; set [model.sr] and/or [model.recognizer]",
            )
        )
    if not (config.get("data") or {}).get("train"):
        issues.append(
            ConfigIssue(
                _file_of("data", prov, file),
                "data.train",
                "no train table: nothing to train on (set [data.train], e.g. "
                'train = { type = "textzoom", roots = ["train1", "train2"] })',
            )
        )
    return issues


def load_experiment(
    path: str | Path,
    overrides: list[str] | dict[str, Any] | None = None,
    only: list[str] | None = None,
    _stack: tuple[Path, ...] = (),
    *,
    for_training: bool = False,
) -> Experiment:
    """Read, expand and validate an experiment; raises ConfigError listing every problem.

    ``for_training``: also refuse what training would refuse (:func:`training_issues`).
    Upstream stages named in ``needs`` are loaded too (tsrx.config.needs); ``_stack`` holds
    the files that need this one, to report a cycle.
    """
    path = Path(path)
    raw, prov = load_with_extends(path)
    file = str(path.resolve())
    raw_needs = raw.pop("needs", None)
    raw_name = raw.get("name")
    name = raw_name if isinstance(raw_name, str) else path.stem
    plugins = raw.get("plugins", [])
    if plugins:
        if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
            raise ConfigError(
                [ConfigIssue(file, "plugins", "expected a list of module names or .py paths")]
            )
        load_named_plugins(plugins, path.parent, where=f"{file}:plugins")
    sets = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides or []))
    points, axes, issues = _expand_points(raw, file)
    bad_name = _name_issue(_file_of("name", prov, file), "name", name, "experiment name")
    if bad_name is not None:
        issues.append(bad_name)
    for key in sets:
        why = schema_knows(key)
        if why:
            issues.append(ConfigIssue(CLI, f"--set {key}", f"names nothing: {why}"))
    runs: list[RunSpec] = []
    for vname, point in points:
        cfg = copy.deepcopy(raw)
        run_prov = dict(prov)
        for key, value in point.items():
            set_dotted(cfg, key, copy.deepcopy(value))
            run_prov[key] = file
        for key, value in sets.items():
            if key.endswith(".type") or value.lstrip().startswith(("{", "[")):
                value = parse_raw(value)  # a component name, inline table or array: plain TOML
            set_dotted(cfg, key, value)
            run_prov[key] = CLI
        rname = run_name(point, vname)
        cfg["name"] = name
        resolved, run_issues = resolve_run(cfg, run_prov, file)
        if for_training and not run_issues:
            run_issues = training_issues(resolved, run_prov, file)
        for iss in run_issues:
            tagged = (
                iss
                if rname == "main"
                else ConfigIssue(iss.file, iss.key, f"{iss.message} [run {rname}]")
            )
            if tagged not in issues:
                issues.append(tagged)
        runs.append(RunSpec(name, rname, point, resolved, run_prov, variant=vname, axes=axes))
    needs: list[Need] = []
    if raw_needs is not None:
        needs, need_issues = parse_needs(raw_needs, prov, file)
        issues.extend(need_issues)
    if issues:
        raise ConfigError(dedupe_issues(issues))
    exp = Experiment(name, path, runs)
    if needs:
        upstream = _load_upstream(exp, needs, sets, _stack, file, for_training)
        resolve_needs(exp, needs, upstream, file)
    if only:
        unknown = [o for o in only if not any(r.name == o or r.name.startswith(o) for r in runs)]
        if unknown:
            raise TsrxError(
                f"--only {unknown[0]!r} names no run of {path}"
                f"{suggest(unknown[0], [r.name for r in runs])}; runs: "
                + ", ".join(r.name for r in runs)
            )
        exp.runs = [r for r in runs if any(r.name == o or r.name.startswith(o) for o in only)]
    return exp


def _load_upstream(
    exp: Experiment,
    needs: list[Need],
    sets: dict[str, Any],
    stack: tuple[Path, ...],
    file: str,
    for_training: bool = False,
) -> dict[Path, Experiment]:
    """Each upstream file of ``needs`` loaded once, with the overrides that reach it."""
    here = Path(file).resolve()
    shared = upstream_overrides(exp, sets)
    loaded: dict[Path, Experiment] = {}
    for need in needs:
        cycle = cycle_issue(need, stack, here, file)
        if cycle is not None:
            raise ConfigError([cycle])
        if need.file not in loaded:
            loaded[need.file] = load_experiment(
                need.file, dict(shared), _stack=(*stack, here), for_training=for_training
            )
    return loaded
