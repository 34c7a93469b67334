"""``tsrx plugins list``: what is registered, and which plugin provided it."""

from __future__ import annotations

import json

import typer

app = typer.Typer(help="Inspect installed plugins and registered components.", no_args_is_help=True)


@app.command("list")
def list_cmd(
    pattern: str = typer.Argument("*", help="Only names matching this glob (e.g. 'side*')."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every registered component per registry, with its module, package and version."""
    import fnmatch

    from tsrx.plugins import failures, load_plugins, loaded_plugins
    from tsrx.registry import ALL

    load_plugins()
    by_name = {p.name: p for p in loaded_plugins()}
    rows = []
    for reg_name, reg in ALL.items():
        for e in reg.entries():
            if not fnmatch.fnmatch(e.name, pattern):
                continue
            plugin_name = e.plugin.split(" (")[0]
            info = by_name.get(plugin_name)
            rows.append({"registry": reg_name, "name": e.name, "module": e.module,
                         "plugin": plugin_name,
                         "package": info.package if info else "",
                         "version": info.version if info else "",
                         "builtin": bool(info and info.builtin)})
    fails = [{"plugin": f.plugin.name, "module": f.plugin.module, "package": f.plugin.package,
              "error": f.error} for f in failures()]
    if as_json:
        typer.echo(json.dumps({"components": rows, "failed": fails}, indent=2))
        return
    from rich.table import Table

    from tsrx.cli.console import console
    table = Table(title="tsrx components")
    for col in ("registry", "name", "module", "package", "version"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["registry"], r["name"], r["module"], r["package"] or "(local)", r["version"])
    console.print(table)
    for f in fails:
        console.print(f"[yellow]skipped plugin {f['plugin']} ({f['package'] or f['module']}): {f['error']}[/]")
