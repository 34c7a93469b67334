"""Plugin discovery: entry points, plus modules and files named by an experiment.

Built-in plugins and third-party packages register the same way: a module listed
under the ``tsrx.plugins`` entry-point group registers its components on import.
Unpackaged research code is named in an experiment (``plugins = ["my_lab.heads",
"path/to/my_head.py"]``). ``TSRX_NO_PLUGIN_AUTOLOAD=1`` turns off third-party
autoloading; the built-ins (entry points of the ``tsrx`` distribution) stay.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsrx.errors import TsrxError

ENTRY_POINT_GROUP = "tsrx.plugins"
NO_AUTOLOAD_ENV = "TSRX_NO_PLUGIN_AUTOLOAD"
BUILTIN_DIST = "tsrx"


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin came from: shown by `tsrx plugins list` and recorded in run metadata."""

    name: str  # entry-point name, module name or file path
    module: str
    package: str  # providing distribution ("" for local modules and files)
    version: str
    builtin: bool


@dataclass(frozen=True)
class PluginFailure:
    plugin: PluginInfo
    error: str

    def __str__(self) -> str:
        pkg = (
            f" from package {self.plugin.package} {self.plugin.version}"
            if self.plugin.package
            else ""
        )
        return (
            f"plugin {self.plugin.name!r} (module {self.plugin.module}{pkg}) "
            f"failed to import: {self.error}"
        )


_loaded: dict[str, PluginInfo] = {}
_failures: list[PluginFailure] = []
_autoloaded = False


def loaded_plugins() -> list[PluginInfo]:
    return list(_loaded.values())


def failures() -> list[PluginFailure]:
    return list(_failures)


def failures_text() -> str:
    """For an unknown-name error: the plugins that failed to import (one may have held it)."""
    return "; ".join(str(f) for f in _failures)


_plugin_stack: list[str] = []


def current_plugin() -> str | None:
    """The plugin being imported (registrations are attributed to it), or None."""
    return _plugin_stack[-1] if _plugin_stack else None


class registering_for:
    """Context manager: registrations inside it are attributed to ``plugin``."""

    def __init__(self, plugin: str):
        self.plugin = plugin

    def __enter__(self) -> None:
        _plugin_stack.append(self.plugin)

    def __exit__(self, *exc: object) -> None:
        _plugin_stack.pop()


def _import_plugin(info: PluginInfo, loader) -> None:
    label = f"{info.name} ({info.package} {info.version})" if info.package else info.name
    with registering_for(label):
        loader()
    _loaded[info.name] = info


# Names of plugins whose failure was already reported in this command: ranks spawned by
# `tsrx train --nproc N` inherit it, so the warning prints once rather than N + 1 times.
WARNED_ENV = "TSRX_PLUGIN_WARNED"


def _warn_once(failure: PluginFailure) -> None:
    warned = [w for w in os.environ.get(WARNED_ENV, "").split(",") if w]
    if failure.plugin.name in warned:
        return
    os.environ[WARNED_ENV] = ",".join([*warned, failure.plugin.name])
    print(f"tsrx: warning: skipped {failure}", file=sys.stderr)


def load_plugins(warn: bool = True) -> None:
    """Import every plugin of the entry-point group, once per process.

    A plugin that fails to import is skipped and reported once (``warn=False``: the caller
    reports :func:`failures` itself).
    """
    global _autoloaded
    if _autoloaded:
        return
    _autoloaded = True
    no_autoload = os.environ.get(NO_AUTOLOAD_ENV, "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
    )
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else ""
        version = ep.dist.version if ep.dist is not None else ""
        builtin = dist.lower() == BUILTIN_DIST
        if no_autoload and not builtin:
            continue
        info = PluginInfo(ep.name, ep.value.split(":")[0], dist, version, builtin)
        if info.name in _loaded:
            continue
        try:
            _import_plugin(info, ep.load)
        except TsrxError:
            raise
        except Exception as exc:  # a broken third-party plugin must not take tsrx down
            err = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            failure = PluginFailure(info, err)
            _failures.append(failure)
            if warn:
                _warn_once(failure)


def load_named_plugins(
    specs: list[str], base_dir: Path | str = ".", where: str = "plugins"
) -> None:
    """Import the plugins an experiment names: dotted module names or ``.py`` paths.

    Paths are relative to the experiment file's folder. Failures are errors: the
    experiment asked for this plugin by name.
    """
    load_plugins()
    for spec in specs:
        if spec.endswith(".py") or "/" in spec or os.sep in spec:
            path = (Path(base_dir) / spec).resolve()
            key = str(path)
            if key in _loaded:
                continue
            if not path.is_file():
                raise TsrxError(f"{where}: plugin file {spec!r} not found (looked at {path})")
            mod_name = f"tsrx_local_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
            info = PluginInfo(key, mod_name, "", "", False)

            def load_file(path: Path = path, mod_name: str = mod_name) -> None:
                spec_obj = importlib.util.spec_from_file_location(mod_name, path)
                module = importlib.util.module_from_spec(spec_obj)
                sys.modules[mod_name] = module
                try:
                    spec_obj.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(mod_name, None)
                    raise

            loader = load_file
        else:
            key = spec
            if key in _loaded:
                continue
            info = PluginInfo(spec, spec, "", "", False)

            def loader(spec: str = spec) -> None:
                importlib.import_module(spec)

        try:
            _import_plugin(info, loader)
        except TsrxError:
            raise
        except Exception as exc:
            err = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise TsrxError(f"{where}: plugin {spec!r} failed to import: {err}") from exc


# -- components a checkpoint names ---------------------------------------------------------
# Where a checkpoint's config names components (registry key, dotted path). Evaluating or
# inspecting a checkpoint builds these; nothing else in its config is built.
CHECKPOINT_COMPONENTS = (
    ("sr", "model.sr"),
    ("recognizer", "model.recognizer"),
    ("head", "model.head"),
    ("recognizer", "model.prior"),
    ("recognizer", "eval.judge"),
)


def _built_places(config: dict) -> list[tuple[str, str]]:
    """(registry key, dotted path) of the component tables evaluating a checkpoint builds:
    the model's parts, its text-prior generator, the judges and the test splits."""
    places = list(CHECKPOINT_COMPONENTS)
    judges = _table_at(config, "eval.judges")
    for name, table in (judges if isinstance(judges, dict) else {}).items():
        if isinstance(table, dict) and not table.get("optional"):
            places.append(("recognizer", f"eval.judges.{name}"))
    tests = _table_at(config, "data.test")
    places += [
        ("dataset", f"data.test.{name}") for name in (tests if isinstance(tests, dict) else {})
    ]
    return places


def _table_at(config: dict, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _label(info: PluginInfo) -> str:
    return f"{info.name} ({info.package} {info.version})" if info.package else info.name


def components_of_loaded_plugins() -> dict[str, list[str]]:
    """Per loaded plugin: the ``registry:name`` components its import registered."""
    from tsrx.registry import ALL

    by_label = {_label(info): info.name for info in _loaded.values()}
    out: dict[str, list[str]] = {info.name: [] for info in _loaded.values()}
    for key, registry in ALL.items():
        for name, entry in registry._entries.items():
            owner = by_label.get(entry.plugin)
            if owner is not None:
                out[owner].append(f"{key}:{name}")
    return out


def _provider_text(kind: str, name: str, recorded: list, config_plugins: list) -> str:
    """Which plugin the checkpoint says held the component, as its record has it."""
    wanted = f"{kind}:{name}"
    for rec in recorded:
        if isinstance(rec, dict) and wanted in (rec.get("components") or []):
            return _describe_record(rec)
    listed = [_describe_record(r) for r in recorded if isinstance(r, dict) and not r.get("builtin")]
    listed += [
        f"{p!r}"
        for p in config_plugins
        if isinstance(p, str)
        and not any(isinstance(r, dict) and r.get("name") == p for r in recorded)
    ]
    return (
        ("one of the plugins it was trained with: " + "; ".join(listed))
        if listed
        else ("no plugin recorded in the checkpoint")
    )


def _describe_record(rec: dict) -> str:
    name = str(rec.get("name", "?"))
    if rec.get("package"):
        return (
            f"package {rec['package']} {rec.get('version') or ''} (install it: "
            f"pip install {rec['package']})"
        ).replace("  ", " ")
    kind = "file" if name.endswith(".py") or "/" in name else "module"
    return f"{kind} {name} (pass --plugin {name})"


def require_checkpoint_components(
    config: dict,
    *,
    source: str,
    recorded: list | None = None,
    user_plugins: list[str] | tuple[str, ...] = (),
) -> None:
    """Check that every component a checkpoint's config names is available, importing nothing
    the checkpoint names: a ``plugins = [...]`` list or a ``module:Name`` type inside a
    ``.pth`` is data (importing it would run code from the file, around weights_only=True).

    Components come from installed plugins (entry points) and ``user_plugins`` (what the
    user passed with ``--plugin``). A missing one is an error saying which plugin provided
    it when the checkpoint was written and how to pass it.
    """
    load_plugins()
    load_named_plugins(list(user_plugins), ".", where="--plugin")
    from tsrx.registry import ALL

    recorded = [r for r in (recorded or []) if isinstance(r, dict)]
    config_plugins = config.get("plugins") or []
    missing = []
    for kind, dotted in _built_places(config):
        table = _table_at(config, dotted)
        if not isinstance(table, dict) or not isinstance(table.get("type"), str):
            continue
        name = table["type"]
        if name in ALL[kind]._loaded():
            continue
        if ":" in name:
            # never imported (Registry.get refuses import paths); said here with the others
            provider = "nothing: a type is a registered component name, not an import path"
        else:
            provider = _provider_text(kind, name, recorded, config_plugins)
        missing.append(f"{dotted}.type = {name!r} ({ALL[kind].kind}): provided by {provider}")
    if missing:
        raise TsrxError(
            f"{source}: the checkpoint's model needs component(s) that no installed plugin or "
            f"--plugin provides: {'; '.join(missing)}. tsrx never imports code a checkpoint "
            "names; if you trust that code, pass it with --plugin PATH_OR_MODULE (repeatable)"
        )
