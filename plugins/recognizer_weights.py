"""Loading a recognizer's official weights: strict loads and errors that say what a file is.

Shared by the attention recognizers (plugins/aster.py, plugins/moran.py), whose
``load_official(obj, source)`` refuses anything but their own layout.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tsrx.checkpoint import strip_module_prefix
from tsrx.errors import TsrxError


def marked_state(
    obj: Any, markers: tuple[str, ...], tensors_only: bool = False
) -> OrderedDict[str, torch.Tensor] | None:
    """``obj`` as a state_dict, ``module.`` prefixes dropped, if it is a mapping with string
    keys (and only tensors, with ``tensors_only``) holding every key in ``markers``; else None.
    How a recognizer tells its own official layout from any other file."""
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        return None
    if tensors_only and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    state = strip_module_prefix(obj)
    return state if all(m in state for m in markers) else None


def describe_checkpoint(obj: Any) -> str:
    """What a loaded checkpoint looks like, for errors: the official format a reader in
    CHECKPOINT_FORMATS claims (CRNN, MORAN, a TextZoom SR model...), else its first keys."""
    from tsrx.checkpoint import read_official

    if isinstance(obj, Mapping) and obj.get("format") == "tsrx":
        return "a tsrx checkpoint"
    try:
        found = read_official(obj)
    except TsrxError as exc:
        return f"a checkpoint that a known layout rejects ({exc})"
    if found is not None:
        names = {"textzoom": "TextZoom SR", "crnn": "CRNN", "moran": "MORAN", "aster": "ASTER"}
        return (
            f"{'an' if found.format == 'aster' else 'a'} "
            f"{names.get(found.format, found.format)} checkpoint (model {found.model})"
        )
    if isinstance(obj, Mapping):
        keys = [str(k) for k in obj]
        return f"a dict with keys {', '.join(keys[:5])}{'...' if len(keys) > 5 else ''}"
    return f"a {type(obj).__name__}"


def load_strictly(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, name: str
) -> None:
    """load_state_dict(strict=True) with a TsrxError naming the keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    problems = [
        f"{len(keys)} {what} (first: {keys[0]})"
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise TsrxError(
            f"{source}: the {name} checkpoint does not fit the model: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
