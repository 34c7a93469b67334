"""A checkpoint file back to the model it holds: the one loading path of tsrx.

``tsrx eval``, ``tsrx sr``, ``tsrx viz samples``, ``tsrx ckpt``, ``tsrx report --eval-missing``
and ``tsrx.load_model`` all open a checkpoint with :func:`open_checkpoint`, so a check or a fix
lands everywhere at once:

- a tsrx checkpoint carries its resolved config; an official one (TextZoom, meijieru CRNN,
  ASTER...) is recognised by a reader in ``CHECKPOINT_FORMATS`` whose ``model`` table rebuilds
  it; a run directory's ``config.toml`` or a user's ``--config`` may describe it instead;
- every component a stored config (the checkpoint's, a run directory's) names must come from
  installed or user-listed plugins: nothing named inside a file is imported
  (tsrx.checkpoint_components, docs/guarantees.md);
- the weights are loaded in one shot; loss-combiner tensors are not model weights; a missing
  weight is an error, never a silently random layer, except the text-prior generator of an
  official text-prior file, which comes from ``model.prior_weights``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tsrx.errors import TsrxError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The one device rule of every command: ``auto`` (or None) is CUDA when available, else
    the CPU; anything else is taken as written (``cpu``, ``cuda``, ``cuda:1``)."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise TsrxError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TsrxError(f"--device {device}: CUDA is not available here; use cpu or auto")
    return dev


def official_config(obj: Any, where: str = "<checkpoint>") -> dict[str, Any]:
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
    raw: dict[str, Any] = {"name": "eval", "model": official.model}
    channels = _sr_channels(official.model.get("sr"))
    if channels in (3, 4):  # the data's mask channel follows the backbone the file holds
        raw["data"] = {"mask": channels == 4}
    cfg, issues = resolve_run(raw, {}, where)
    if issues:
        raise ConfigError(issues)
    return cfg


def _sr_channels(sr_table: dict[str, Any] | None) -> int | None:
    if not sr_table:
        return None
    from tsrx.registry import SR_BACKBONES

    return getattr(SR_BACKBONES.build(dict(sr_table), "model.sr"), "in_channels", None)


def checkpoint_config(obj: Any, where: str = "<checkpoint>") -> dict[str, Any]:
    """The config a checkpoint describes itself with (tsrx: embedded and checked; official:
    its reader's)."""
    from tsrx.checkpoint import detect_format

    cfg = obj.get("config") if detect_format(obj) == "tsrx" else None
    if isinstance(cfg, dict):
        check_stored_config(cfg, where, recorded=obj.get("plugins"))
        return cfg
    return official_config(obj, where)


def check_stored_config(
    config: dict[str, Any], where: str, recorded: list[Any] | None = None
) -> None:
    """A config read from a file tsrx did not just write (a checkpoint's, a run directory's):
    every component it names must be registered by a plugin the user installed or passed."""
    from tsrx.checkpoint_components import require_checkpoint_components

    require_checkpoint_components(config, source=where, recorded=recorded)


def build_loaded(config: dict[str, Any], obj: Any, source: str) -> tuple[nn.Module, Any]:
    """The joint model of ``config`` with the checkpoint's weights (combiner weights left out);
    returns (model, load report). Missing weights are an error."""
    from tsrx.checkpoint import detect_format, load_into, state_dict_for
    from tsrx.models.build import build_model
    from tsrx.models.config import model_section

    model_sec = model_section(config)
    model = build_model(config, load_init=False)
    state = {k: v for k, v in state_dict_for(obj).items() if not k.startswith("combiner.")}
    report = load_into(
        model, state, source=source, allow_shape_mismatch=model_sec.allow_shape_mismatch
    )
    missing = report.missing
    if (
        missing
        and model_sec.prior_weights
        and all(k.startswith(("prior.", "prior_teacher.")) for k in missing)
    ):
        # an official text-prior file holds the SR network only: the text-prior generator
        # comes from the config's model.prior_weights
        from tsrx.models.build import load_prior_weights

        load_prior_weights(model, model_sec.prior_weights)
        missing = []
    if missing:
        raise TsrxError(
            f"{source}: {len(missing)} model weight(s) missing from the "
            f"checkpoint (first: {missing[0]}); does the config describe this "
            f"model? ({detect_format(obj)} format)"
        )
    return model, report


@dataclass
class Loaded:
    """A checkpoint rebuilt: the joint model (weights loaded, eval mode, on ``device``), the
    config that describes it, and the judges that read for it (see :meth:`with_judges`)."""

    model: nn.Module
    config: dict[str, Any]
    format: str
    source: str
    report: Any  # tsrx.checkpoint.LoadReport
    device: torch.device
    judges: list[Any] = field(default_factory=list)  # tsrx.engine.judges.Judge

    def with_judges(
        self,
        *,
        cli: dict[str, dict[str, Any]] | None = None,
        warn: Any = None,
    ) -> Loaded:
        """The model's own recognizer, then the config's ``[eval.judges]`` (or ``cli``'s)."""
        from tsrx.engine.judge_build import build_judges

        self.judges = [
            j.to(self.device)
            for j in build_judges(
                self.config.get("eval") or {},
                self.model,
                cli=cli,
                warn=warn,
            )
        ]
        return self

    @property
    def has_reader(self) -> bool:
        return bool(self.judges)

    @property
    def judge_name(self) -> str | None:
        return self.judges[0].description if self.judges else None

    def read(self, images: torch.Tensor) -> list[str] | None:
        """Readings of RGB images in [0, 1] by the first judge (None without one)."""
        return self.judges[0].read(images[:, :3]) if self.judges else None

    def held_part(self) -> nn.Module:
        """What the file holds: its SR backbone when it holds only one, its recognizer when it
        holds only that, else the joint model (``forward(batch) -> {"sr", "logits"}``)."""
        model = self.model
        if model.recognizer is None and model.head is None and model.prior is None:
            return model.sr
        if model.sr is None and model.head is None:
            return model.recognizer
        return model


def open_checkpoint(
    path: str | Path,
    *,
    config: dict[str, Any] | None = None,
    stored: bool = True,
    plugins: Any = (),
    device: str | torch.device | None = None,
    obj: Any = None,
) -> Loaded:
    """Load ``path`` into the model its config describes.

    ``config``: the model's config when the file's own (embedded, or its official reader's)
    is not the one to use; ``stored`` says it was read from a file (a run directory's
    ``config.toml``) and is checked like a checkpoint's, while a user's ``--config`` (whose
    plugins its own loading imported) is not. ``plugins``: files or modules the user trusts
    to provide components. ``obj``: the file's content when already read.
    """
    from tsrx.checkpoint import detect_format, load_checkpoint
    from tsrx.plugins import load_named_plugins

    load_named_plugins(list(plugins), ".", where="--plugin")
    source = str(path)
    if obj is None:
        obj = load_checkpoint(path)
    if config is None:
        config = checkpoint_config(obj, source)
    elif stored:
        check_stored_config(config, source)
    model, report = build_loaded(config, obj, source)
    dev = resolve_device(device)
    model.to(dev).eval()
    return Loaded(model, config, detect_format(obj), source, report, dev)


def official_text_prior_backbone(obj: Any, source: str) -> nn.Module | None:
    """The SR network of an official text-prior backbone's file (``forward(x, prior)``),
    weights loaded; None for any other file. Such a file holds no text-prior generator, so it
    is no joint model: ``load_model`` hands back the backbone and the caller brings the prior."""
    from tsrx.checkpoint import detect_format, load_into, read_official, state_dict_for
    from tsrx.models.build import build_parts

    if detect_format(obj) in ("tsrx", "state_dict"):
        return None
    official = read_official(obj)
    if official is None:
        return None
    sr_table = official.model.get("sr")
    if not sr_table or set(official.model) != {"sr"}:
        return None
    from tsrx.registry import SR_BACKBONES

    if not getattr(SR_BACKBONES.get(sr_table["type"]), "needs_text_prior", False):
        return None
    holder = nn.ModuleDict({"sr": build_parts({"sr": sr_table}, source)["sr"]})
    report = load_into(holder, state_dict_for(obj), source=source)
    if report.missing:
        raise TsrxError(
            f"{source}: {len(report.missing)} weight(s) of its {sr_table['type']} backbone "
            f"missing from the file (first: {report.missing[0]})"
        )
    return holder["sr"]


def load_model(
    path: str | Path, device: str | torch.device | None = "cpu", plugins: Any = ()
) -> nn.Module:
    """The model a checkpoint holds, weights loaded, in eval mode: its SR backbone when it
    holds only one (an official text-prior backbone's file: the backbone,
    ``forward(x, prior)``), its recognizer when it holds only that, else the joint model."""
    from tsrx.checkpoint import load_checkpoint
    from tsrx.plugins import load_named_plugins

    load_named_plugins(list(plugins), ".", where="load_model plugins")
    obj = load_checkpoint(path)
    backbone = official_text_prior_backbone(obj, str(path))
    if backbone is not None:
        return backbone.to(resolve_device(device)).eval()
    loaded = open_checkpoint(path, device=device, obj=obj)
    return loaded.held_part()


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
            try:  # a component of a plugin not installed here: the file's estimate
                check_stored_config({"model": model_cfg}, "checkpoint", obj.get("plugins"))
            except TsrxError:
                return None
    elif fmt == "state_dict":
        return None
    else:
        official = read_official(obj)  # not None: detect_format named its reader
        model_cfg = official.model if official is not None else {}
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
