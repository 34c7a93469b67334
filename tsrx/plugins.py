"""Plugin discovery: entry points, plus modules and files named by an experiment.

Built-in plugins and third-party packages register the same way: a module listed
under the ``tsrx.plugins`` entry-point group registers its components on import.
Unpackaged research code is named in an experiment (``plugins = ["my_lab.heads",
"path/to/my_head.py"]``). ``TSRX_NO_PLUGIN_AUTOLOAD=1`` turns off third-party
autoloading; the built-ins (entry points of the ``tsrx`` distribution) stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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


# How the person reading an error passes a plugin: the CLI's --plugin flag, or (the default,
# for tsrx.load_model and other Python callers) the plugins= argument. Set by tsrx.cli.main.
_via_cli = False


@contextlib.contextmanager
def called_from_cli() -> Iterator[None]:
    """While the CLI runs a command, errors name --plugin; a Python caller in the same
    process afterwards (a notebook that ran the CLI, a test suite) is told about plugins=."""
    global _via_cli
    before, _via_cli = _via_cli, True
    try:
        yield
    finally:
        _via_cli = before


def how_to_pass(spec: str = "PATH_OR_MODULE") -> str:
    """The words that tell this caller how to hand tsrx a plugin."""
    if _via_cli:
        return f"pass --plugin {spec}"
    return (
        f"pass plugins=[{spec!r}] to tsrx.load_model (a module name or .py path), or "
        "import the module before loading"
    )


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


def plugin_label(info: PluginInfo) -> str:
    """How registrations name the plugin they came from (``Entry.plugin``)."""
    return f"{info.name} ({info.package} {info.version})" if info.package else info.name


def _import_plugin(info: PluginInfo, loader: Callable[[], None]) -> None:
    with registering_for(plugin_label(info)):
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
        loader: Callable[[], None]
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
                if spec_obj is None or spec_obj.loader is None:  # not a .py file
                    raise TsrxError(
                        f"{where}: plugin file {path} is not a Python module: "
                        "expected a .py file or a dotted module name"
                    )
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

            def load_module(spec: str = spec) -> None:
                importlib.import_module(spec)

            loader = load_module

        try:
            _import_plugin(info, loader)
        except TsrxError:
            raise
        except Exception as exc:
            err = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise TsrxError(f"{where}: plugin {spec!r} failed to import: {err}") from exc
