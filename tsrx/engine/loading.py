"""A checkpoint file back to the model it holds: ``tsrx.load_model`` and ``tsrx eval`` share this.

A tsrx checkpoint carries its resolved config; an official one (TextZoom, meijieru CRNN,
ASTER...) is recognised by a reader in ``CHECKPOINT_FORMATS`` whose ``model`` table rebuilds
it. The weights are loaded in one shot and a missing weight is an error, never a silently
random layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tsrx.errors import TsrxError


def official_config(obj: Any, where: str = "<checkpoint>") -> dict:
    """The resolved config of an official checkpoint's model (its reader's ``model`` table)."""
    from tsrx.checkpoint import detect_format, read_official
    from tsrx.config.experiment import resolve_run
    from tsrx.errors import ConfigError

    official = read_official(obj)
    if official is None:
        raise TsrxError(
            f"{where}: checkpoint format {detect_format(obj)!r} does not say which "
            "model it holds: pass a config with a [model] table"
        )
    raw: dict = {"name": "eval", "model": official.model}
    sr = official.model.get("sr")
    if sr:  # the data's mask channel follows the backbone the file holds (3 or 4 channels)
        from tsrx.registry import SR_BACKBONES

        channels = getattr(SR_BACKBONES.build(dict(sr), "model.sr"), "in_channels", None)
        if channels in (3, 4):
            raw["data"] = {"mask": channels == 4}
    cfg, issues = resolve_run(raw, {}, where)
    if issues:
        raise ConfigError(issues)
    return cfg


def checkpoint_config(obj: Any, where: str = "<checkpoint>") -> dict:
    """The config a checkpoint describes itself with (tsrx: embedded; official: its reader's).

    The components a tsrx checkpoint names must come from installed or user-listed plugins:
    nothing named inside the file is imported (docs/guarantees.md)."""
    from tsrx.checkpoint import detect_format

    if detect_format(obj) == "tsrx" and isinstance(obj.get("config"), dict):
        from tsrx.checkpoint_components import require_checkpoint_components

        cfg = obj["config"]
        require_checkpoint_components(cfg, source=where, recorded=obj.get("plugins"))
        return cfg
    return official_config(obj, where)


def build_loaded(config: dict, obj: Any, source: str) -> tuple[nn.Module, Any]:
    """The joint model of ``config`` with the checkpoint's weights (combiner weights left out);
    returns (model, load report). Missing weights are an error."""
    from tsrx.checkpoint import detect_format, load_into, state_dict_for
    from tsrx.models.build import build_model

    model = build_model(config, load_init=False)
    state = {k: v for k, v in state_dict_for(obj).items() if not k.startswith("combiner.")}
    report = load_into(
        model,
        state,
        source=source,
        allow_shape_mismatch=(config.get("model") or {}).get("allow_shape_mismatch", False),
    )
    missing = report.missing
    prior_weights = (config.get("model") or {}).get("prior_weights")
    if (
        missing
        and prior_weights
        and all(k.startswith(("prior.", "prior_teacher.")) for k in missing)
    ):
        # an official TPGSR/TATT file holds the SR network only: the text-prior generator
        # comes from the config's model.prior_weights
        from tsrx.models.build import load_prior_weights

        load_prior_weights(model, prior_weights)
        missing = []
    if missing:
        raise TsrxError(
            f"{source}: {len(missing)} model weight(s) missing from the "
            f"checkpoint (first: {missing[0]}); does the config describe this "
            f"model? ({detect_format(obj)} format)"
        )
    return model, report


def load_model(path: str | Path, device: Any = "cpu", plugins: Any = ()) -> nn.Module:
    """The model a checkpoint holds, weights loaded, in eval mode: its SR backbone when it
    holds only one, its recognizer when it holds only that, else the joint model
    (``forward(batch) -> {"sr", "logits"}``)."""
    from tsrx.checkpoint import load_checkpoint
    from tsrx.plugins import load_named_plugins

    load_named_plugins(list(plugins), ".", where="load_model plugins")
    obj = load_checkpoint(path)
    model, _ = build_loaded(checkpoint_config(obj, str(path)), obj, str(path))
    if model.recognizer is None and model.head is None:
        model = model.sr
    elif model.sr is None and model.head is None:
        model = model.recognizer
    return model.to(device).eval()


def parameter_count(module: nn.Module | None) -> int:
    """Parameters only (not buffers such as TPS grids or BatchNorm statistics)."""
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def exact_parameter_counts(obj: Any) -> dict[str, int] | None:
    """Per part (sr, recognizer, head): the parameter count of the model the checkpoint
    describes (tsrx config or official layout), for each part whose built module has exactly
    the file's keys and shapes; None when nothing can be built here."""
    from tsrx.checkpoint import detect_format, read_official, state_dict_for
    from tsrx.models.build import build_parts

    fmt = detect_format(obj)
    if fmt == "tsrx":
        model_cfg = (
            (obj.get("config") or {}).get("model") if isinstance(obj.get("config"), dict) else None
        )
        if model_cfg:
            from tsrx.checkpoint_components import require_checkpoint_components

            try:  # a component of a plugin not installed here: the file's estimate
                require_checkpoint_components(
                    {"model": model_cfg}, source="checkpoint", recorded=obj.get("plugins")
                )
            except TsrxError:
                return None
    elif fmt == "state_dict":
        return None
    else:
        model_cfg = read_official(obj).model
    if not model_cfg:
        return None
    try:
        parts = build_parts(model_cfg)
    except Exception:  # a plugin that is not installed here: fall back to the file's estimate
        return None
    state = state_dict_for(obj)
    out = {}
    for part, module in parts.items():
        if module is None:
            continue
        mine = {f"{part}.{k}": tuple(v.shape) for k, v in module.state_dict().items()}
        theirs = {k: tuple(v.shape) for k, v in state.items() if k.split(".", 1)[0] == part}
        tolerated = {k for k in mine if k.endswith("num_batches_tracked")}
        if {k: v for k, v in mine.items() if k not in tolerated} == {
            k: v for k, v in theirs.items() if k not in tolerated
        }:
            out[part] = parameter_count(module)
    return out or None
