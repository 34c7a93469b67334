"""TextZoom's checkpoint layout, shared by every SR model trained with its code base.

TextZoom (``src/interfaces/base.py``, ``save_checkpoint``) saves
``{'state_dict_G': model.state_dict(), 'info': {'arch': ..., 'iters': ..., ...}, ...}``;
TBSRN, TPGSR and TATT keep that layout. ``info.arch`` names the architecture with the
official ``--arch`` value, which is the name the backbone is registered under in
``SR_BACKBONES`` (a file without ``info.arch`` is TSRN, TextZoom's own default).

A backbone whose official weights need converting (several stages, renamed keys) defines
``from_textzoom_checkpoint(obj) -> (options, state_dict)``; otherwise ``state_dict_G`` is
taken as it is, ``module.`` prefixes dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from tsrx.checkpoint import OfficialCheckpoint, strip_module_prefix
from tsrx.errors import TsrxError
from tsrx.registry import CHECKPOINT_FORMATS, SR_BACKBONES

DEFAULT_ARCH = "tsrn"


@CHECKPOINT_FORMATS.register("textzoom")
def read_textzoom(obj: Any) -> OfficialCheckpoint | None:
    """TextZoom-style SR checkpoint (``state_dict_G``) -> the SR backbone its ``info.arch`` names."""
    if not isinstance(obj, Mapping) or "state_dict_G" not in obj:
        return None
    info = obj.get("info") if isinstance(obj.get("info"), Mapping) else {}
    arch = info.get("arch") or DEFAULT_ARCH
    if not isinstance(arch, str) or arch not in SR_BACKBONES.names():
        known = ", ".join(SR_BACKBONES.names())
        raise TsrxError(
            f"TextZoom-format checkpoint: info.arch = {arch!r} is not a registered "
            f"SR backbone (known: {known}). Install the plugin that provides it, "
            "or pass --config FILE with a [model.sr] table naming the architecture"
        )
    backbone = SR_BACKBONES.get(arch)
    convert = getattr(backbone, "from_textzoom_checkpoint", None)
    if convert is not None:
        options, weights = convert(obj)
    else:
        if not isinstance(obj["state_dict_G"], Mapping):
            raise TsrxError(
                f"TextZoom-format checkpoint ({arch}): state_dict_G is a "
                f"{type(obj['state_dict_G']).__name__}, expected a state_dict"
            )
        options, weights = {}, obj["state_dict_G"]
    state = OrderedDict((f"sr.{k}", v) for k, v in strip_module_prefix(weights).items())
    shown = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool))}
    return OfficialCheckpoint(
        "textzoom",
        {"sr": {"type": arch, **options}},
        state,
        {f"info.{k}": v for k, v in shown.items()},
    )
