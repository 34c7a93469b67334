"""``tsrx plugins list|show``: what is registered, which plugin provided it, and its options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Inspect installed plugins and registered components.", no_args_is_help=True)

CONFIG_HELP = (
    "An experiment file whose `plugins = [...]` (modules, .py files) are loaded "
    "first, so its local components are listed too."
)


def _load(config: Path | None) -> None:
    """Every entry-point plugin, and those an experiment file names (without validating it)."""
    from tsrx.plugins import load_named_plugins, load_plugins

    load_plugins(warn=False)  # the commands print the failures themselves
    if config is not None:
        from tsrx.config.load import load_with_extends

        raw, _ = load_with_extends(config)
        plugins = raw.get("plugins") or []
        if plugins:
            load_named_plugins(plugins, config.parent, where=f"{config.resolve()}:plugins")


def _matches(pattern: str, reg_key: str, kind: str, name: str) -> bool:
    """A glob over the name, or the registry (``head``, ``sr_loss``) or its kind (``sr loss``)."""
    import fnmatch

    return any(fnmatch.fnmatch(x, pattern) for x in (name, reg_key, kind))


@app.command("list")
def list_cmd(
    pattern: str = typer.Argument(
        "*",
        help="Only components whose name or kind matches this "
        "glob (e.g. 'side*', 'head', 'sr_loss').",
    ),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every registered component per registry, with its module, package and version."""
    from tsrx.plugins import failures, loaded_plugins
    from tsrx.registry import ALL

    _load(config)
    by_name = {p.name: p for p in loaded_plugins()}
    rows: list[dict[str, Any]] = []  # JSON rows of --json
    for reg_name, reg in ALL.items():
        for e in reg.entries():
            if not _matches(pattern, reg_name, reg.kind, e.name):
                continue
            plugin_name = e.plugin.split(" (")[0]
            info = by_name.get(plugin_name)
            rows.append(
                {
                    "registry": reg_name,
                    "name": e.name,
                    "module": e.module,
                    "plugin": plugin_name,
                    "package": info.package if info else "",
                    "version": info.version if info else "",
                    "builtin": bool(info and info.builtin),
                }
            )
    fails = [
        {
            "plugin": f.plugin.name,
            "module": f.plugin.module,
            "package": f.plugin.package,
            "error": f.error,
        }
        for f in failures()
    ]
    if as_json:
        typer.echo(json.dumps({"components": rows, "failed": fails}, indent=2))
        return
    from rich.table import Table

    from tsrx.cli.console import console

    table = Table(title="tsrx components" + (f" matching {pattern!r}" if pattern != "*" else ""))
    for col in ("registry", "name", "module", "package", "version"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["registry"], r["name"], r["module"], r["package"] or "(local)", r["version"]
        )
    console.print(table)
    if not rows:
        console.print(
            f"nothing matches {pattern!r}; registries: {', '.join(ALL)}",
            highlight=False,
            markup=False,
        )
    for f in fails:
        console.print(
            f"[yellow]skipped plugin {f['plugin']} ({f['package'] or f['module']}): {f['error']}[/]"
        )


def describe_component(reg_key: str, name: str) -> dict[str, Any]:
    """What ``tsrx plugins show`` prints: origin, docstring and options of one component."""
    import inspect

    from tsrx.config.schema import signature_fields, type_name, unannotated_options
    from tsrx.errors import source_file
    from tsrx.registry import ALL

    reg = ALL[reg_key]
    obj = reg.get(name)
    entry = next((e for e in reg.entries() if e.name == name), None)
    fields, var_kw = signature_fields(obj)
    loose = set(unannotated_options(obj))
    options = []
    for f in fields.values():
        options.append(
            {
                "name": f.name,
                "type": type_name(f.annotation),
                "required": f.required and f.name not in reg.provided,
                "default": None if f.required else f.default,
                "provided_by_tsrx": f.name in reg.provided,
                "checked": f.name not in loose,
            }
        )
    return {
        "registry": reg_key,
        "kind": reg.kind,
        "name": name,
        "object": f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', obj)}",
        "file": source_file(obj),
        "plugin": entry.plugin if entry else "(imported by name)",
        "doc": inspect.getdoc(obj) or "",
        "options": options,
        "extra_options": var_kw,
    }


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="A component name (e.g. 'sidernn')."),
    kind: str = typer.Option(
        None,
        "--kind",
        help="The registry (head, sr, sr_loss, ...) when the name exists in several.",
    ),
    config: Path = typer.Option(None, "--config", help=CONFIG_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """A component's options (type, default, whether tsrx sets it), docstring and origin."""
    from tsrx.errors import TsrxError, suggest
    from tsrx.registry import ALL

    _load(config)
    if kind is not None and kind not in ALL:
        raise TsrxError(
            f"--kind {kind!r}: no such registry{suggest(kind, ALL)}; registries: {', '.join(ALL)}"
        )
    keys = [kind] if kind else list(ALL)
    found = [k for k in keys if name in ALL[k].names()]
    if not found:
        every = sorted({n for k in keys for n in ALL[k].names()})
        where = f"registry {kind!r}" if kind else "any registry"
        from tsrx.plugins import failures_text

        failed = failures_text()
        raise TsrxError(
            f"no component {name!r} in {where}{suggest(name, every)}; "
            "`tsrx plugins list` shows them all (add --config FILE for an "
            "experiment's local plugins)" + (f". Note: {failed}" if failed else "")
        )
    described = [describe_component(k, name) for k in found]
    if as_json:
        typer.echo(
            json.dumps(described if len(described) > 1 else described[0], indent=2, default=str)
        )
        return
    from rich.table import Table

    from tsrx.cli.console import console

    for i, d in enumerate(described):
        if i:
            console.print()
        console.print(
            f"[bold]{d['kind']} {d['name']!r}[/] (registry {d['registry']})", highlight=False
        )
        for label, key in (("object", "object"), ("file", "file"), ("plugin", "plugin")):
            console.print(f"  {label}: {d[key]}", highlight=False, markup=False)
        if d["doc"]:
            console.print()
            console.print(d["doc"], highlight=False, markup=False)
        table = Table(title=f"options of {d['name']!r}")
        for col in ("option", "type", "default", "note"):
            table.add_column(col)
        for o in d["options"]:
            note = "set by tsrx" if o["provided_by_tsrx"] else "required" if o["required"] else ""
            if not o["checked"]:
                note = (note + "; " if note else "") + "no annotation: not checked"
            default = (
                ""
                if o["required"] or o["provided_by_tsrx"]
                else json.dumps(o["default"], default=str)
            )
            table.add_row(o["name"], o["type"], default, note)
        console.print(table)
        if d["extra_options"]:
            console.print(
                "  takes **kwargs: other keys are passed through unchecked",
                highlight=False,
                markup=False,
            )
