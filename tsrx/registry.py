"""The registries: one per extension point, each a name -> component table.

A plugin registers with an explicit name (``@HEADS.register("sidernn+mlp")``).
Looking a name up first loads every installed plugin (``tsrx.plugins``), so
registration never depends on what happened to be imported before.
Components are built from TOML tables: ``type = "name"`` plus keyword arguments,
checked against the component's signature before anything heavy runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from tsrx.config.schema import check_table, signature_fields
from tsrx.errors import ConfigError, ConfigIssue, TsrxError, suggest


@dataclass(frozen=True)
class Entry:
    """A registered component and where it came from (for `tsrx plugins list`)."""

    name: str
    obj: Any
    module: str
    plugin: str  # the plugin (entry point, module or file) whose import registered it


class Registry:
    """Named components of one kind; see the module docstring."""

    def __init__(self, kind: str, description: str, provided: tuple[str, ...] = ()):
        self.kind = kind
        self.description = description
        # arguments tsrx supplies when it builds a component (not settable in TOML)
        self.provided = frozenset(provided)
        self._entries: dict[str, Entry] = {}

    # -- registration ---------------------------------------------------------------
    def register(self, name: str, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; usable as ``@REG.register("name")``."""
        if not isinstance(name, str) or not name.strip() or ":" in name:
            raise TsrxError(f"{self.kind}: invalid component name {name!r} "
                            "(a non-empty string without ':')")

        def add(o: Any) -> Any:
            where = callable_name(o)
            plugin = _current_plugin() or getattr(o, "__module__", "?")
            if name in self._entries:
                old = self._entries[name]
                if old.obj is o:
                    return o
                raise TsrxError(
                    f"{self.kind} {name!r} is registered twice: by {callable_name(old.obj)} "
                    f"(plugin {old.plugin}) and by {where} (plugin {plugin}). Rename one of them.")
            self._entries[name] = Entry(name, o, getattr(o, "__module__", "?"), plugin)
            return o

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and interactive reloading)."""
        self._entries.pop(name, None)

    # -- lookup -----------------------------------------------------------------------
    def _loaded(self) -> dict[str, Entry]:
        from tsrx.plugins import load_plugins
        load_plugins()
        return self._entries

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def entries(self) -> Iterator[Entry]:
        entries = self._loaded()
        for name in sorted(entries):
            yield entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self._loaded() or ":" in name

    def get(self, name: str) -> Any:
        """The component named ``name``, or ``package.module:Name`` imported directly."""
        if ":" in name:
            return _import_object(name, self.kind)
        entries = self._loaded()
        if name in entries:
            return entries[name].obj
        from tsrx.plugins import failures_text
        failed = failures_text()
        registered = ", ".join(sorted(entries)) or "(none)"
        msg = (f"unknown {self.kind} {name!r}{suggest(name, entries)}; "
               f"registered: {registered}")
        if failed:
            msg += f". Note: {failed}"
        raise TsrxError(msg)

    # -- build from a table -----------------------------------------------------------
    def check(self, table: dict, where: str, file: str = "<config>",
              provided: frozenset[str] = frozenset()) -> list[ConfigIssue]:
        """Problems of a component table (unknown type, unknown or mistyped argument)."""
        provided = frozenset(provided) | self.provided
        if not isinstance(table, dict):
            return [ConfigIssue(file, where, f"expected a table with 'type', got {table!r}")]
        if "type" not in table:
            return [ConfigIssue(file, f"{where}.type",
                                f"is required: the {self.kind} to use, one of {', '.join(self.names())}")]
        try:
            obj = self.get(table["type"])
        except TsrxError as exc:
            return [ConfigIssue(file, f"{where}.type", str(exc))]
        fields, var_kw = signature_fields(obj)
        _, problems = check_table(table, fields, where, extra_ok=var_kw, provided=provided,
                                  skip=frozenset({"type"}))
        return [ConfigIssue(file, k, m) for k, m in problems]

    def build(self, table: dict, where: str = "", file: str = "<config>",
              **context: Any) -> Any:
        """Instantiate the component of ``table``.

        ``context`` holds arguments tsrx supplies (``num_classes``, ``in_channels``...);
        each is passed only when the component's signature accepts it.
        """
        issues = self.check(table, where, file, provided=frozenset(context))
        if issues:
            raise ConfigError(issues)
        obj = self.get(table["type"])
        fields, var_kw = signature_fields(obj)
        checked, _ = check_table(table, fields, where, extra_ok=var_kw, skip=frozenset({"type"}),
                                 provided=frozenset(context) | self.provided)
        kwargs = {k: v for k, v in checked.items() if k != "type"}
        for k, v in context.items():
            if k in fields or var_kw:
                kwargs[k] = v
        return obj(**kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} registered)"


def _import_object(spec: str, kind: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TsrxError(f"{kind} {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TsrxError(f"{kind} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TsrxError(f"{kind} {spec!r} is not callable")
    return obj


_plugin_stack: list[str] = []


def _current_plugin() -> str | None:
    return _plugin_stack[-1] if _plugin_stack else None


class registering_for:
    """Context manager: registrations inside it are attributed to ``plugin``."""

    def __init__(self, plugin: str):
        self.plugin = plugin

    def __enter__(self) -> None:
        _plugin_stack.append(self.plugin)

    def __exit__(self, *exc: Any) -> None:
        _plugin_stack.pop()


# The extension points. Each component's constructor is its schema.
# The extension points. Each component's constructor is its schema; ``provided`` names the
# arguments the engine passes itself.
SR_BACKBONES = Registry("sr backbone", "super-resolvers: LR image (B,C,h,w) -> SR image (B,C,H,W)")
RECOGNIZERS = Registry("recognizer", "text recognizers exposing sequence features and a classifier")
HEADS = Registry("head", "recognition heads: features (T,B,C) -> logits (T,B,classes)",
                 provided=("in_features", "num_classes"))
SR_LOSSES = Registry("sr loss", "losses between the SR and HR images")
REC_LOSSES = Registry("recognition loss", "losses between recognizer logits and labels")
PRIOR_LOSSES = Registry("text-prior loss", "losses between the text priors of the LR and HR images")
CONSISTENCY_LOSSES = Registry("consistency loss",
                              "losses between the SR images of a transformed and the plain LR")
COMBINERS = Registry("loss combiner", "merge per-task losses into one scalar", provided=("tasks",))
SELECTORS = Registry("selector", "decide which validation result is the best checkpoint")
DATASETS = Registry("dataset", "sources of (LR, HR, label) samples",
                    provided=("root", "hr_size", "lr_size", "mask", "voc_type", "max_len", "skip_bad"))
OPTIMIZERS = Registry("optimizer", "torch optimizers built from model parameters", provided=("params",))
SCHEDULERS = Registry("scheduler", "learning-rate schedules", provided=("optimizer", "total_steps"))
# Not a config table: readers of official checkpoint layouts, obj -> OfficialCheckpoint | None
# (tsrx.engine.checkpoint.read_official).
CHECKPOINT_FORMATS = Registry("checkpoint format",
                              "readers of official checkpoint layouts (TextZoom, CRNN...)")

ALL: dict[str, Registry] = {
    "sr": SR_BACKBONES, "recognizer": RECOGNIZERS, "head": HEADS, "sr_loss": SR_LOSSES,
    "rec_loss": REC_LOSSES, "prior_loss": PRIOR_LOSSES,
    "consistency_loss": CONSISTENCY_LOSSES, "combiner": COMBINERS,
    "selector": SELECTORS, "dataset": DATASETS, "optimizer": OPTIMIZERS, "scheduler": SCHEDULERS,
}


def callable_name(obj: Callable) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}"


__all__ = ["Registry", "Entry", "ALL", "registering_for", "callable_name", *[
    n for n in ("SR_BACKBONES", "RECOGNIZERS", "HEADS", "SR_LOSSES", "REC_LOSSES",
                "PRIOR_LOSSES", "CONSISTENCY_LOSSES", "COMBINERS",
                "SELECTORS", "DATASETS", "OPTIMIZERS", "SCHEDULERS",
                "CHECKPOINT_FORMATS")]]
