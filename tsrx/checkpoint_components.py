"""The components a checkpoint names: which plugin registered each (recorded when a checkpoint
is saved) and whether they are available now (checked before one is loaded).

Apart from ``tsrx.plugins`` because it reads the registries, which themselves load plugins:
discovery stays below the registries, so the two never import each other.
"""

from __future__ import annotations

from typing import Any

from tsrx.errors import TsrxError
from tsrx.plugins import (
    how_to_pass,
    load_named_plugins,
    load_plugins,
    loaded_plugins,
    plugin_label,
)
from tsrx.registry import ALL

# Where a checkpoint's config names components (registry key, dotted path). Evaluating or
# inspecting a checkpoint builds these; nothing else in its config is built.
CHECKPOINT_COMPONENTS = (
    ("sr", "model.sr"),
    ("recognizer", "model.recognizer"),
    ("head", "model.head"),
    ("recognizer", "model.prior"),
    ("recognizer", "eval.judge"),
)


def _built_places(config: dict[str, Any]) -> list[tuple[str, str]]:
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


def _table_at(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def components_of_loaded_plugins() -> dict[str, list[str]]:
    """Per loaded plugin: the ``registry:name`` components its import registered."""
    plugins = loaded_plugins()
    by_label = {plugin_label(info): info.name for info in plugins}
    out: dict[str, list[str]] = {info.name: [] for info in plugins}
    for key, registry in ALL.items():
        for name, entry in registry._entries.items():
            owner = by_label.get(entry.plugin)
            if owner is not None:
                out[owner].append(f"{key}:{name}")
    return out


def _provider_text(
    kind: str, name: str, recorded: list[object], config_plugins: list[object]
) -> str:
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


def _describe_record(rec: dict[str, Any]) -> str:
    name = str(rec.get("name", "?"))
    if rec.get("package"):
        return (
            f"package {rec['package']} {rec.get('version') or ''} (install it: "
            f"pip install {rec['package']})"
        ).replace("  ", " ")
    kind = "file" if name.endswith(".py") or "/" in name else "module"
    return f"{kind} {name} ({how_to_pass(name)})"


def require_checkpoint_components(
    config: dict[str, Any],
    *,
    source: str,
    recorded: list[object] | None = None,
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
            f"{source}: the checkpoint's model needs component(s) that no installed or "
            f"passed plugin provides: {'; '.join(missing)}. tsrx never imports code a "
            f"checkpoint names; if you trust that code, {how_to_pass()} (repeatable)"
        )
