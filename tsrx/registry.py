"""The registries: one per extension point, each a name -> component table.

A plugin registers with an explicit name (``@HEADS.register("sidernn+mlp")``).
Looking a name up first loads every installed plugin (``tsrx.plugins``), so
registration never depends on what happened to be imported before.
Components are built from TOML tables: ``type = "name"`` plus keyword arguments,
checked against the component's signature before anything heavy runs. This module is the one
home of a component table: its check (``Registry.check``, ``check_components`` for tables
inside config sections), its defaults (``component_defaults``) and its building
(``Registry.build``); ``tsrx.config.schema`` only knows types.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Union

from tsrx.config.schema import (
    Mismatch,
    RawValue,
    check_table,
    coerce,
    component_of,
    dataclass_fields,
    parse_raw,
    signature_fields,
    unannotated_options,
    unwrap_optional,
)
from tsrx.errors import ConfigError, ConfigIssue, TsrxError, source_file, suggest
from tsrx.plugins import current_plugin, failures_text, load_plugins, registering_for

log = logging.getLogger("tsrx")
_warned: set[tuple[str, str]] = set()  # components whose unannotated options were reported


@dataclass(frozen=True)
class Entry:
    """A registered component and where it came from (for `tsrx plugins list`)."""

    name: str
    obj: Any
    module: str
    plugin: str  # the plugin (entry point, module or file) whose import registered it


class Registry:
    """Named components of one kind; see the module docstring."""

    def __init__(
        self,
        kind: str,
        description: str,
        provided: tuple[str, ...] = (),
        contract: str | None = None,
    ):
        self.kind = kind
        self.description = description
        # arguments tsrx supplies when it builds a component (not settable in TOML)
        self.provided = frozenset(provided)
        # the check in tsrx.contracts that every component built here must pass; a name, not
        # the function, because tsrx.contracts imports torch and validating a config must not
        self.contract = contract
        self._entries: dict[str, Entry] = {}

    # -- registration ---------------------------------------------------------------
    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; usable as ``@REG.register("name")``."""
        if not isinstance(name, str) or not name.strip() or ":" in name:
            raise TsrxError(
                f"{self.kind}: invalid component name {name!r} (a non-empty string without ':')"
            )

        def add(o: Any) -> Any:
            where = callable_name(o)
            plugin = current_plugin() or str(getattr(o, "__module__", "?"))
            if name in self._entries:
                old = self._entries[name]
                if old.obj is o:
                    return o
                if _same_source(old.obj, o):
                    raise TsrxError(
                        f"{self.kind} {name!r} is registered twice by the same code: "
                        f"{source_file(o)} was imported twice, as module {old.module} "
                        f"(plugin {old.plugin}) and as module {getattr(o, '__module__', '?')} "
                        f"(plugin {plugin}). Load it once: name it either in an experiment's "
                        "plugins = [...] or through an installed package / module path, "
                        "not both"
                    )
                raise TsrxError(
                    f"{self.kind} {name!r} is registered twice: by {callable_name(old.obj)} "
                    f"(plugin {old.plugin}) and by {where} (plugin {plugin}). Rename one of them."
                )
            _check_option_annotations(self.kind, name, o)
            self._entries[name] = Entry(name, o, getattr(o, "__module__", "?"), plugin)
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and interactive reloading)."""
        self._entries.pop(name, None)

    # -- lookup -----------------------------------------------------------------------
    def _loaded(self) -> dict[str, Entry]:
        load_plugins()
        return self._entries

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def entries(self) -> Iterator[Entry]:
        entries = self._loaded()
        for name in sorted(entries):
            yield entries[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._loaded()

    def get(self, name: str) -> Any:
        """The component registered as ``name``.

        A type is a registered name and nothing else: never an import path. So no config,
        including one stored in a checkpoint or a run directory from elsewhere, can make
        tsrx import a module or call an arbitrary function (docs/guarantees.md).
        """
        if not isinstance(name, str):
            raise TsrxError(f"{self.kind} type: expected a component name (a string), got {name!r}")
        entries = self._loaded()
        if name in entries:
            return entries[name].obj
        registered = ", ".join(sorted(entries)) or "(none)"
        if ":" in name:
            raise TsrxError(
                f"{self.kind} {name!r}: a type is a registered component name, not an import "
                "path (tsrx never imports a module that a config names). Register the "
                f'component in a plugin (`@REGISTRY.register("my_name")`, docs: README "Writing '
                'a plugin"), load the plugin with plugins = [...] or as an installed package, '
                f"and name it; registered: {registered}"
            )
        failed = failures_text()
        msg = f"unknown {self.kind} {name!r}{suggest(name, entries)}; registered: {registered}"
        if failed:
            msg += f". Note: {failed}"
        raise TsrxError(msg)

    def label(self, name: str) -> str:
        """``'gated' of plugin gated (tsrx-gated-head 0.1.0)``: a component in an error."""
        entry = self._entries.get(name)
        return f"{name!r} of plugin {entry.plugin}" if entry else repr(name)

    # -- build from a table -----------------------------------------------------------
    def check(
        self,
        table: dict[str, Any],
        where: str,
        file: str = "<config>",
        provided: frozenset[str] = frozenset(),
    ) -> list[ConfigIssue]:
        """Problems of a component table (unknown type, unknown or mistyped argument)."""
        provided = frozenset(provided) | self.provided
        if not isinstance(table, dict):
            return [ConfigIssue(file, where, f"expected a table with 'type', got {table!r}")]
        if "type" not in table:
            return [
                ConfigIssue(
                    file,
                    f"{where}.type",
                    f"is required: the {self.kind} to use, one of {', '.join(self.names())}",
                )
            ]
        try:
            obj = self.get(table["type"])
        except TsrxError as exc:
            return [ConfigIssue(file, f"{where}.type", str(exc))]
        fields, var_kw = signature_fields(obj)
        _, problems = check_table(
            table, fields, where, extra_ok=var_kw, provided=provided, skip=frozenset({"type"})
        )
        return [ConfigIssue(file, k, m) for k, m in problems]

    def build(
        self,
        table: dict[str, Any],
        where: str = "",
        file: str = "<config>",
        *,
        contract_args: dict[str, Any] | None = None,
        **context: Any,
    ) -> Any:
        """Instantiate the component of ``table`` and check it against the registry's contract.

        ``context`` holds arguments tsrx supplies (``num_classes``, ``in_channels``...);
        each is passed only when the component's signature accepts it. The contract check
        (``tsrx.contracts``, a dry forward for modules) receives the context arguments it
        names and ``contract_args`` (what the run will feed the component: image sizes,
        channels, the loss inputs...); a component that breaks it is a ``ContractError``
        naming its plugin and file, raised here, before anything trains.
        """
        issues = self.check(table, where, file, provided=frozenset(context))
        if issues:
            raise ConfigError(issues)
        obj = self.get(table["type"])
        fields, var_kw = signature_fields(obj)
        checked, _ = check_table(
            table,
            fields,
            where,
            extra_ok=var_kw,
            skip=frozenset({"type"}),
            provided=frozenset(context) | self.provided,
        )
        kwargs = {k: v for k, v in checked.items() if k != "type"}
        for k, v in context.items():
            if k in fields or var_kw:
                kwargs[k] = v
        self._warn_unannotated(table["type"], obj, frozenset(context) | self.provided)
        component = obj(**kwargs)
        self.check_contract(component, table["type"], contract_args, **context)
        return component

    def check_contract(
        self, component: Any, name: str, contract_args: dict[str, Any] | None = None, **context: Any
    ) -> None:
        """Run this registry's contract check on a built ``component`` registered as ``name``."""
        if self.contract is None:
            return
        from tsrx import contracts  # torch: imported when something is built, not validated

        check = getattr(contracts, self.contract)
        accepted = inspect.signature(check).parameters
        args = {k: v for k, v in context.items() if k in accepted}
        args.update(contract_args or {})
        check(component, self.label(name), **args)

    def _warn_unannotated(self, name: str, obj: Any, provided: frozenset[str]) -> None:
        options = unannotated_options(obj, provided)
        key = (self.kind, name)
        if options and key not in _warned:
            _warned.add(key)
            log.warning(
                "%s %s: option(s) %s have no type annotation, so their TOML values "
                "are not checked; annotate them (e.g. `hidden_units: int = 32`)",
                self.kind,
                self.label(name),
                ", ".join(options),
            )

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered)"


# The extension points. Each component's constructor is its schema; ``provided`` names the
# arguments the engine passes itself; ``contract`` the check of tsrx.contracts every component
# built here passes (docs/architecture.md, "Tensors and batches").
SR_BACKBONES = Registry(
    "sr backbone",
    "super-resolvers: LR image (B,C,h,w) -> SR image (B,C,H,W)",
    contract="check_sr",
)
RECOGNIZERS = Registry(
    "recognizer",
    "text recognizers exposing sequence features and a classifier",
    contract="check_recognizer",
)
HEADS = Registry(
    "head",
    "recognition heads: features (T,B,C) -> logits (T,B,classes)",
    provided=("in_features", "num_classes"),
    contract="check_head",
)
SR_LOSSES = Registry("sr loss", "losses between the SR and HR images", contract="check_sr_loss")
REC_LOSSES = Registry(
    "recognition loss",
    "losses between recognizer logits and labels",
    contract="check_rec_loss",
)
PRIOR_LOSSES = Registry(
    "text-prior loss",
    "losses between the text priors of the LR and HR images",
    contract="check_prior_loss",
)
CONSISTENCY_LOSSES = Registry(
    "consistency loss",
    "losses between the SR images of a transformed and the plain LR",
    contract="check_consistency_loss",
)
COMBINERS = Registry(
    "loss combiner",
    "merge per-task losses into one scalar",
    provided=("tasks",),
    contract="check_combiner",
)
SELECTORS = Registry(
    "selector",
    "decide which validation result is the best checkpoint",
    contract="check_selector",
)
DATASETS = Registry(
    "dataset",
    "sources of (LR, HR, label) samples",
    provided=("root", "hr_size", "lr_size", "mask", "voc_type", "max_len", "skip_bad"),
    contract="check_dataset",
)
OPTIMIZERS = Registry(
    "optimizer",
    "torch optimizers built from model parameters",
    provided=("params",),
    contract="check_optimizer",
)
SCHEDULERS = Registry(
    "scheduler",
    "learning-rate schedules",
    provided=("optimizer", "total_steps"),
    contract="check_scheduler",
)
CALLBACKS = Registry(
    "callback",
    "training hooks called at fixed points of the loop (tsrx/engine/callbacks.py)",
    contract="check_callback",
)
# Not a config table and never built: readers of official checkpoint layouts,
# obj -> OfficialCheckpoint | None (tsrx.checkpoint.read_official).
CHECKPOINT_FORMATS = Registry(
    "checkpoint format", "readers of official checkpoint layouts (TextZoom, CRNN...)"
)

# Not a config table: renderers of `tsrx report` (rich, md, csv, json, paper-md, latex...),
# a class with ``render(report) -> str`` (tsrx.report.formats holds the contract).
# Not a config table and never built: the field's published weight files (tsrx.published).
PUBLISHED_FILES = Registry(
    "published file", "published weight files: source, and checksum or key layout"
)
REPORT_FORMATS = Registry(
    "report format",
    "renderers of `tsrx report`: a report's tables -> text (rich, md, csv, json, paper-md, latex)",
    contract="check_report_format",
)

ALL: dict[str, Registry] = {
    "sr": SR_BACKBONES,
    "recognizer": RECOGNIZERS,
    "head": HEADS,
    "sr_loss": SR_LOSSES,
    "rec_loss": REC_LOSSES,
    "prior_loss": PRIOR_LOSSES,
    "consistency_loss": CONSISTENCY_LOSSES,
    "combiner": COMBINERS,
    "selector": SELECTORS,
    "dataset": DATASETS,
    "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
    "report_format": REPORT_FORMATS,
    "callback": CALLBACKS,
}


# -- component tables inside config sections (one home: checked, defaulted, built here) -----
def check_components(value: Any, tp: Any, path: str) -> list[tuple[str, str]]:
    """Problems of component tables inside ``value`` of type ``tp`` (fields marked with
    :class:`Component`), as ``(dotted key, message)``."""
    if value is None:
        return []
    comp = component_of(tp)
    if comp is not None:
        registry = ALL[comp.registry]
        items = list(enumerate(value)) if comp.many else [(None, value)]
        problems = []
        for i, item in items:
            where = path if i is None else f"{path}[{i}]"
            table = {"type": item} if isinstance(item, str) else item
            problems += [(iss.key, iss.message) for iss in registry.check(table, where)]
        return problems
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            if component_of(arg) is not None:
                return check_components(value, arg, path)
    if origin is dict and isinstance(value, dict):
        inner = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        return [p for k, v in value.items() for p in check_components(v, inner, f"{path}.{k}")]
    tp = unwrap_optional(tp)
    if (
        isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict)
    ):  # a section, a nested table
        fields = dataclass_fields(tp)
        return [
            p
            for k, v in value.items()
            if k in fields
            for p in check_components(v, fields[k].annotation, f"{path}.{k}")
        ]
    return []


def component_defaults(table: dict[str, Any], registry_name: str) -> dict[str, Any]:
    """``table`` with its component's constructor defaults filled in (the resolved config
    records every option), and ``--set`` strings typed by the constructor's signature."""
    try:
        obj = ALL[registry_name].get(table["type"])
        fields, _ = signature_fields(obj)
    except Exception:
        return table
    out = dict(table)
    for name, value in table.items():
        if isinstance(value, RawValue):  # from --set: typed by the component's signature
            try:
                out[name] = (
                    coerce(value, fields[name].annotation) if name in fields else parse_raw(value)
                )
            except Mismatch:
                pass  # the check of this table reports it
    for name, f in fields.items():
        if name not in out and not f.required and _tomlable(f.default):
            out[name] = copy.deepcopy(f.default)
    return out


def _tomlable(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_tomlable(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _tomlable(x) for k, x in v.items())
    return False


def fill_components(value: Any, tp: Any) -> Any:
    """Recursively add signature defaults to component tables inside ``value``."""
    if value is None:
        return None
    comp = component_of(tp) or component_of(unwrap_optional(tp))
    if comp is not None:
        if comp.many:
            return [
                v if isinstance(v, str) else component_defaults(v, comp.registry) for v in value
            ]
        return component_defaults(value, comp.registry) if isinstance(value, dict) else value
    tp = unwrap_optional(tp)
    if typing.get_origin(tp) is dict and isinstance(value, dict):
        inner = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        return {k: fill_components(v, inner) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        fields = dataclass_fields(tp)
        return {
            k: fill_components(v, fields[k].annotation) if k in fields else v
            for k, v in value.items()
        }
    return value


def _check_option_annotations(kind: str, name: str, obj: Any) -> None:
    """An option annotated with a range or check itself (``x: Positive``) instead of a type
    carrying it (``x: Annotated[float, Positive]``) could never be checked (every value would
    read "expected a table"): refused when the component registers, naming the option."""
    from tsrx.config.schema import Check, Component, Range

    if not callable(obj):
        return
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        params = inspect.signature(target).parameters
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable annotations: reported when the options are checked
        return
    for option in params:
        ann = hints.get(option)
        if isinstance(ann, (Range, Check, Component)):
            what = type(ann).__name__
            hint = (
                f"Annotated[float, {_range_name(ann)}] (or int)"
                if isinstance(ann, Range)
                else f"Annotated[<type>, {what}(...)]"
            )
            raise TsrxError(
                f"{kind} {name!r} ({callable_name(obj)}): option {option!r} is annotated with "
                f"a {what} ({ann!r}), which is not a type: tsrx cannot check its values. "
                f"Write {hint}, or use tsrx.config's PositiveInt, PositiveFloat, "
                "NonNegativeInt, NonNegativeFloat, Fraction"
            )


def _range_name(rng: Any) -> str:
    from tsrx.config import schema

    for label in ("Positive", "NonNegative", "Probability", "OpenUnit"):
        if getattr(schema, label) == rng:
            return label
    return repr(rng)


def callable_name(obj: Callable[..., Any]) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}"


def _same_source(a: Any, b: Any) -> bool:
    """Two objects defined by the same code in the same file (one file imported twice)."""
    file = source_file(a)
    return (
        file != "?"
        and file == source_file(b)
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


__all__ = [
    "Registry",
    "Entry",
    "ALL",
    "registering_for",
    "callable_name",
    *[
        n
        for n in (
            "SR_BACKBONES",
            "RECOGNIZERS",
            "HEADS",
            "SR_LOSSES",
            "REC_LOSSES",
            "PRIOR_LOSSES",
            "CONSISTENCY_LOSSES",
            "COMBINERS",
            "SELECTORS",
            "DATASETS",
            "OPTIMIZERS",
            "SCHEDULERS",
            "CALLBACKS",
            "CHECKPOINT_FORMATS",
            "PUBLISHED_FILES",
            "REPORT_FORMATS",
        )
    ],
]
