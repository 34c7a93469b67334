"""Reading experiment files: TOML parsing, ``extends`` and deep merging.

Each value remembers the file that set it (its provenance), so an error about a
merged key still names the file a user must edit.

Merging a file onto the files it extends: tables merge key by key, anything else replaces.
Three ways to replace or remove what a base file set (docs/config.md, "extends"):

- a component table whose ``type`` changes starts afresh (``sr = { type = "srcnn" }`` over
  a TSRN keeps none of TSRN's options);
- ``"_replace_" = true`` inside a table replaces the inherited table instead of merging (at
  a file's top level it is an error: the file would replace everything it extends);
- ``key = "_delete_"`` removes an inherited key, table or grid axis.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib as tomllib  # re-exported: tsrx reads TOML through this name
else:  # pragma: no cover
    import tomli as tomllib


from tsrx.errors import ConfigError, ConfigIssue, TsrxError

Provenance = dict[str, str]  # dotted key -> file that set it


def read_toml(path: Path) -> dict[str, Any]:
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
    """Which file set each key; a key a file deletes is that file's too (an error about the
    missing table names the file that removed it), and what was inside it nobody's."""
    if isinstance(table, dict):
        for k, v in table.items():
            if k == REPLACE:
                continue
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, str) and v == DELETE:
                for inner in [p for p in prov if p.startswith(key + ".")]:
                    del prov[inner]
            prov[key] = file
            _record(prov, v, key, file)


REPLACE = "_replace_"  # in a table: `"_replace_" = true` drops the inherited table
DELETE = "_delete_"  # as a value: removes the inherited key
DEFAULT_DATA_ROOT = "data/synth"  # tsrx.data.config.DataSection.root (no import: torch-free)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` onto ``base``: tables merge key by key, anything else replaces.

    See the module docstring for ``_replace_``, ``_delete_`` and a changed ``type``; the
    markers never reach the result.
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, str) and v == DELETE:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and not _starts_afresh(out[k], v):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = strip_markers(copy.deepcopy(v))
    return out


def _starts_afresh(base: dict[str, Any], over: dict[str, Any]) -> bool:
    if over.get(REPLACE) is True:
        return True
    # a component table whose type changes: the old component's options do not apply
    return "type" in over and "type" in base and over["type"] != base["type"]


def strip_markers(value: Any) -> Any:
    """``value`` without ``_replace_`` keys and ``_delete_`` values (nothing to act on)."""
    if isinstance(value, dict):
        return {
            k: strip_markers(v)
            for k, v in value.items()
            if k != REPLACE and not (isinstance(v, str) and v == DELETE)
        }
    return value


def check_markers(table: Any, file: str, prefix: str = "") -> list[ConfigIssue]:
    """A ``_replace_`` that is not ``true`` is a mistake worth naming (``= 1``, ``= "yes"``)."""
    issues: list[ConfigIssue] = []
    if isinstance(table, dict):
        for k, v in table.items():
            key = f"{prefix}.{k}" if prefix else k
            if k == REPLACE and not prefix:
                issues.append(
                    ConfigIssue(
                        file,
                        key,
                        "has no meaning at a file's top level: it replaces one inherited "
                        "table (write it inside that table); to inherit nothing, drop "
                        "'extends'",
                    )
                )
            elif k == REPLACE and v is not True:
                issues.append(
                    ConfigIssue(
                        file, key, f"expected true (replace the inherited table), got {v!r}"
                    )
                )
            issues.extend(check_markers(v, file, key))
    return issues


def load_with_extends(
    path: Path, _stack: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], Provenance]:
    """The file's table with every ``extends`` resolved (relative to the file), merged in order."""
    path = path.resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise TsrxError(f"{path}: 'extends' forms a cycle: {chain}")
    data = read_toml(path)
    issues = check_markers(data, str(path))
    if issues:
        raise ConfigError(issues)
    if isinstance(data.get("grid"), dict):
        # one spelling per axis (dotted key), so `"model.head.type" = "_delete_"` removes an
        # axis a base file wrote as a sub-table, and the other way round
        data["grid"] = dict(flatten_grid(data["grid"]))
    extends = data.pop("extends", [])
    if isinstance(extends, str):
        extends = [extends]
    if not isinstance(extends, list) or not all(isinstance(e, str) for e in extends):
        raise ConfigError(
            [ConfigIssue(str(path), "extends", f"expected a list of file paths, got {extends!r}")]
        )
    merged: dict[str, Any] = {}
    prov: Provenance = {}
    for ext in extends:
        target = path.parent / ext
        if not target.is_file():
            raise TsrxError(
                f"{path}: extends = {ext!r}: file not found (looked at {target.resolve()})"
            )
        sub, sub_prov = load_with_extends(target, (*_stack, path))
        merged = deep_merge(merged, sub)
        prov.update(sub_prov)
    # plugins accumulate across extends (a base's plugins stay loaded); other keys replace
    base_plugins = [p for p in merged.get("plugins", [])]
    merged = deep_merge(merged, data)
    _pin_synth_root(merged, data)
    if "plugins" in data and isinstance(data["plugins"], list):
        merged["plugins"] = _abs_plugins(base_plugins, []) + _abs_plugins(
            data["plugins"], [], path.parent
        )
    _record(prov, data, "", str(path))
    return strip_markers(merged), prov


def _pin_synth_root(merged: dict[str, Any], data: dict[str, Any]) -> None:
    """``data.synth`` written in this file synthesises at the ``data.root`` this file sees, and
    nowhere else: a root changed later (``--set``, grid, a file extending this one) must
    exist (tsrx.data.roots)."""
    table = data.get("data")
    synth = table.get("synth") if isinstance(table, dict) else None
    if not isinstance(synth, dict) or "root" in synth:
        return
    out = merged.get("data")
    if isinstance(out, dict) and isinstance(out.get("synth"), dict):
        out["synth"]["root"] = out.get("root", DEFAULT_DATA_ROOT)


def flatten_grid(tbl: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Grid keys may be written dotted (``"model.head.type" = [...]``) or as sub-tables."""
    out = []
    for k, v in tbl.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.extend(flatten_grid(v, key))
        else:
            out.append((key, v))
    return out


def _abs_plugins(specs: list[object], out: list[object], base: Path | None = None) -> list[object]:
    for s in specs:
        if isinstance(s, str) and base is not None and (s.endswith(".py") or "/" in s):
            s = str((base / s).resolve())
        if s not in out:
            out.append(s)
    return out


def set_dotted(table: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = table
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def get_dotted(table: dict[str, Any], dotted: str, default: Any = None) -> Any:
    cur: Any = table
    for p in dotted.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return default
        cur = cur[p]
    return cur
