"""A small TOML writer for resolved configs (the stdlib reads TOML but cannot write it).

``None`` has no TOML form: such keys are left out, which reads back as the default.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def as_stored(value: Any) -> Any:
    """``value`` as :func:`dumps` writes it and a reader gets it back: every ``None`` (in a
    table or an array) left out."""
    if isinstance(value, dict):
        return {k: as_stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [as_stored(v) for v in value if v is not None]
    return value


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return (
            "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + "}"
        )
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def dumps(table: dict[str, Any]) -> str:
    lines: list[str] = []

    def emit(tbl: dict[str, Any], prefix: str) -> None:
        scalars = {
            k: v
            for k, v in tbl.items()
            if v is not None
            and not isinstance(v, dict)
            and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))
        }
        if prefix and (scalars or not any(isinstance(v, dict) for v in tbl.values())):
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{_key(k)} = {_value(v)}")
        for k, v in tbl.items():
            if isinstance(v, dict):
                emit(v, f"{prefix}.{_key(k)}" if prefix else _key(k))
        for k, v in tbl.items():
            if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                for item in v:
                    lines.append(f"\n[[{prefix + '.' if prefix else ''}{_key(k)}]]")
                    for ik, iv in item.items():
                        if iv is not None:
                            lines.append(f"{_key(ik)} = {_value(iv)}")

    emit(table, "")
    return "\n".join(lines).lstrip("\n") + "\n"
