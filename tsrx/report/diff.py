"""What differs between two runs' resolved configs (``tsrx diff``, and the report's warnings).

A side is a run directory (its ``config.toml``), a ``config.toml``, or a tsrx checkpoint
(the resolved config embedded in it). Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tsrx.config.load import read_toml
from tsrx.errors import TsrxError
from tsrx.runfiles import CONFIG

MISSING = "(absent)"


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def differences(
    a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every key that differs; absent is ``MISSING``."""
    fa, fb = flatten(a), flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if key in ignore:
            continue
        va, vb = fa.get(key, MISSING), fb.get(key, MISSING)
        if _canon(va) != _canon(vb):
            out.append((key, va, vb))
    return out


def _canon(v: Any) -> str:
    # 1 and 1.0 are the same setting in TOML-typed configs
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return json.dumps(v, sort_keys=True, default=str)


def config_of(path: str | Path) -> tuple[dict[str, Any], str]:
    """(resolved config, description of where it came from) for a run, config.toml or checkpoint."""
    path = Path(path)
    if path.is_dir():
        cfg = path / CONFIG
        if not cfg.is_file():
            raise TsrxError(f"{path}: not a run directory (no config.toml)")
        path = cfg
    if not path.exists():
        raise TsrxError(f"{path}: no such run directory, config.toml or checkpoint")
    if path.suffix == ".toml":
        return read_toml(path), str(path)
    return _checkpoint_config(path), f"{path} (embedded config)"


def _checkpoint_config(path: Path) -> dict[str, Any]:
    from tsrx.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict):
        raise TsrxError(
            f"{path}: not a tsrx checkpoint with an embedded config "
            "(expected a dict with 'config'; foreign checkpoints carry none)"
        )
    return config


def short(v: Any, width: int = 60) -> str:
    text = v if isinstance(v, str) and v == MISSING else json.dumps(v, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."
