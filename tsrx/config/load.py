"""Reading experiment files: TOML parsing, ``extends`` and deep merging.

Each value remembers the file that set it (its provenance), so an error about a
merged key still names the file a user must edit.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tsrx.errors import ConfigError, ConfigIssue, TsrxError

Provenance = dict[str, str]  # dotted key -> file that set it


def read_toml(path: Path) -> dict:
    """Parse one TOML file; a syntax error names the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TsrxError(f"{path}: experiment file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TsrxError(f"{path}: cannot read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{path}:{m.group(1)}:{m.group(2)}" if m else str(path)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise TsrxError(f"{where}: malformed TOML: {msg}") from None


def _record(prov: Provenance, table: Any, prefix: str, file: str) -> None:
    if isinstance(table, dict):
        for k, v in table.items():
            key = f"{prefix}.{k}" if prefix else k
            prov[key] = file
            _record(prov, v, key, file)


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` onto ``base``: tables merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_with_extends(path: Path, _stack: tuple[Path, ...] = ()) -> tuple[dict, Provenance]:
    """The file's table with every ``extends`` resolved (relative to the file), merged in order."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise TsrxError(f"{path}: 'extends' forms a cycle: {chain}")
    data = read_toml(path)
    extends = data.pop("extends", [])
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list) or not all(isinstance(e, str) for e in extends):
        raise ConfigError([ConfigIssue(str(path), "extends",
                                       f"expected a list of file paths, got {extends!r}")])
    merged: dict = {}
    prov: Provenance = {}
    for ext in extends:
        target = (path.parent / ext)
        if not target.is_file():
            raise TsrxError(f"{path}: extends = {ext!r}: file not found (looked at {target.resolve()})")
        sub, sub_prov = load_with_extends(target, (*_stack, path))
        merged = deep_merge(merged, sub)
        prov.update(sub_prov)
    # plugins accumulate across extends (a base's plugins stay loaded); other keys replace
    base_plugins = [p for p in merged.get("plugins", [])]
    merged = deep_merge(merged, data)
    if "plugins" in data and isinstance(data["plugins"], list):
        merged["plugins"] = _abs_plugins(base_plugins, []) + _abs_plugins(data["plugins"], [], path.parent)
    _record(prov, data, "", str(path))
    return merged, prov


def _abs_plugins(specs: list, out: list, base: Path | None = None) -> list:
    for s in specs:
        if isinstance(s, str) and base is not None and (s.endswith(".py") or "/" in s):
            s = str((base / s).resolve())
        if s not in out:
            out.append(s)
    return out


def set_dotted(table: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = table
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def get_dotted(table: dict, dotted: str, default: Any = None) -> Any:
    cur: Any = table
    for p in dotted.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur
