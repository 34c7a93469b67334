"""Checkpoints: atomic saving, safe loading, foreign formats, one-shot loading with a report.

A tsrx checkpoint is a plain dict (see docs/architecture.md) whose ``model`` holds the joint
model's state_dict (keys ``sr.*``, ``recognizer.*``, ``head.*``, ``combiner.*``). Loading is
always ``torch.load(weights_only=True)``: a file that needs code to unpickle is refused.
Foreign files are mapped into the same key space, so every load is one ``load_state_dict``
(strict=False) into the whole model followed by a per-part report.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tsrx.errors import TsrxError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

FORMAT = "tsrx"
FORMAT_VERSION = 1
PARTS = ("sr", "recognizer", "head", "combiner")


# -- saving and loading files -------------------------------------------------------------
def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with torch.save atomically: temp file in the same folder, fsync,
    rename. A crash at any point leaves an existing file at ``path`` intact."""
    from tsrx.runfiles import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # serialised in memory first: a full disk is then a plain ENOSPC on write (reported with
    # the path and the size, see tsrx.runfiles) instead of an error inside torch's zip writer
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getbuffer())
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every filesystem lets a directory be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; unsafe or unreadable files become TsrxError."""
    path = Path(path)
    if not path.is_file():
        raise TsrxError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # an untrusted file: torch's reader fails in many ways on garbage
        said = _unpickler_said(exc)
        if isinstance(exc, pickle.UnpicklingError) and "unsupported global" in said.lower():
            raise TsrxError(
                f"checkpoint {path} is refused as unsafe: unpickling it needs code beyond "
                f"tensors and plain containers (torch.load weights_only=True said: {said}). "
                "Re-save its state_dict from a trusted environment, e.g. "
                "torch.save(model.state_dict(), ...)"
            ) from exc
        raise TsrxError(
            f"checkpoint {path}: not a readable torch file (damaged, cut short, or another "
            f"kind of file; torch.load said: {said})"
        ) from exc


def _unpickler_said(exc: Exception) -> str:
    """The part of torch's error that names the problem: its weights-only unpickler's reason
    (after a paragraph of generic advice), else the first line, else the type."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip().splitlines()[0].strip()
        return reason.split(" was not an allowed")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def make_checkpoint(model_state: Mapping[str, torch.Tensor], **fields: Any) -> dict[str, Any]:
    """A tsrx checkpoint dict: the model state plus the optional fields of the format
    (optimizer, scheduler, scaler, step, epoch, sampler, rng, config, plugins, metrics)."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": OrderedDict(strip_module_prefix(model_state)),
    }
    for key in (
        "optimizer",
        "scheduler",
        "scaler",
        "step",
        "epoch",
        "sampler",
        "rng",
        "config",
        "plugins",
        "metrics",
    ):
        payload[key] = fields.pop(key, None)
    payload.update(fields)
    return payload


# -- formats -----------------------------------------------------------------------------
def _is_tensor_map(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Drop the ``module.`` that DataParallel / DDP put in front of keys (also repeated)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        out[key] = value
    return out


@dataclass
class OfficialCheckpoint:
    """An official (non-tsrx) checkpoint recognised by a reader in ``CHECKPOINT_FORMATS``.

    ``model`` is the ``[model]`` table that rebuilds what the file holds (e.g.
    ``{"sr": {"type": "srcnn"}}``), ``state`` its weights already in the joint model's key
    space (``sr.*``, ``recognizer.*``), ``info`` what is worth showing (``tsrx ckpt inspect``).
    """

    format: str
    model: dict[str, Any]
    state: OrderedDict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def parts(self) -> set[str]:
        return {k.split(".", 1)[0] for k in self.state}


def read_official(obj: Any) -> OfficialCheckpoint | None:
    """The first reader in ``CHECKPOINT_FORMATS`` that claims ``obj`` (None if none does).

    Readers are plugins (``@CHECKPOINT_FORMATS.register("textzoom")``): a function of the
    loaded object returning an :class:`OfficialCheckpoint`, or None when the layout is not
    theirs. A reader that recognises the layout but finds it broken raises ``TsrxError``.
    """
    from tsrx.registry import CHECKPOINT_FORMATS

    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return None
    for entry in CHECKPOINT_FORMATS.entries():
        found: OfficialCheckpoint | None = entry.obj(obj)  # a reader's contract
        if found is not None:
            return found
    return None


def detect_format(obj: Any) -> str:
    """ "tsrx", the name of an official format a reader claims (``textzoom``, ``crnn``...),
    or "state_dict" (any other bare state_dict)."""
    return _classify(obj)[0]


def _classify(obj: Any) -> tuple[str, OfficialCheckpoint | None]:
    """``detect_format``'s answer and the official reader's result (each reader runs once)."""
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        return "tsrx", None
    official = read_official(obj)
    if official is not None:
        return official.format, official
    if _is_tensor_map(obj):
        return "state_dict", None
    from tsrx.registry import CHECKPOINT_FORMATS

    known = ", ".join(["tsrx", *CHECKPOINT_FORMATS.names(), "a bare state_dict"])
    if isinstance(obj, Mapping):
        shown = ", ".join(sorted(map(str, obj))[:8])
        raise TsrxError(
            f"unknown checkpoint format: a dict with keys {shown}; expected one of: {known}"
        )
    raise TsrxError(f"unknown checkpoint format: a {type(obj).__name__}, expected a dict ({known})")


def state_dict_for(obj: Any, part: str | None = None) -> OrderedDict[str, torch.Tensor]:
    """The weights of ``obj`` in the joint model's key space (``sr.*``, ``recognizer.*``...).

    ``part`` (sr, recognizer, head or None / "whole" for everything) says where a bare
    state_dict belongs and, for a tsrx or official checkpoint, which part to take from it.
    """
    whole = part in (None, "whole")
    fmt, official = _classify(obj)
    if fmt == "tsrx":
        state = strip_module_prefix(obj["model"])
    elif official is not None:
        state = official.state
        if not whole and part not in official.parts:
            held = ", ".join(sorted(official.parts)) or "nothing"
            raise TsrxError(
                f"a {fmt} checkpoint holds {held} weights, it cannot initialise {part!r}"
            )
    else:
        state = strip_module_prefix(obj)
        if whole:
            return state
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for k, v in state.items():
            # a bare state_dict saved from the joint model already carries its part prefix
            out[k if k.startswith(f"{part}.") else f"{part}.{k}"] = v
        return out
    if whole:
        return state
    return OrderedDict((k, v) for k, v in state.items() if k.split(".", 1)[0] == part)


# -- loading into a model -----------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DataParallel / DDP wrapper, so both save and load the same keys."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _part_of(key: str) -> str:
    return key.split(".", 1)[0]


@dataclass
class PartReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # key, its shape in the checkpoint, its shape in the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


@dataclass
class LoadReport:
    """What a one-shot load did, per part (first key segment)."""

    parts: dict[str, PartReport] = field(default_factory=dict)
    source: str = ""
    tolerated: list[str] = field(default_factory=list)  # missing num_batches_tracked

    def part(self, name: str) -> PartReport:
        return self.parts.setdefault(name, PartReport())

    def _all(self, attr: str) -> list[Any]:
        return [k for p in self.parts.values() for k in getattr(p, attr)]

    @property
    def loaded(self) -> list[str]:
        return self._all("loaded")

    @property
    def missing(self) -> list[str]:
        return self._all("missing")

    @property
    def unexpected(self) -> list[str]:
        return self._all("unexpected")

    @property
    def mismatched(self) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
        return self._all("mismatched")

    def table(self) -> Table:
        """A rich Table: one row per part, counts of loaded / missing / unexpected / mismatched."""
        from rich.table import Table

        t = Table(title=f"checkpoint load{': ' + self.source if self.source else ''}")
        for col in ("part", "loaded", "missing", "unexpected", "shape mismatch"):
            t.add_column(col, justify="left" if col == "part" else "right")
        for name, p in self.parts.items():
            t.add_row(
                name,
                str(len(p.loaded)),
                str(len(p.missing)),
                str(len(p.unexpected)),
                str(len(p.mismatched)),
            )
        return t

    def details(self, limit: int = 10) -> list[str]:
        """Lines naming the keys that were not loaded (at most ``limit`` per kind and part)."""
        lines = []
        for name, p in self.parts.items():
            for kind, keys in (
                ("missing", p.missing),
                ("unexpected", p.unexpected),
                (
                    "shape mismatch",
                    [f"{k} checkpoint {tuple(a)} model {tuple(b)}" for k, a, b in p.mismatched],
                ),
            ):
                if keys:
                    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
                    lines.append(f"{name}: {kind}: {', '.join(keys[:limit])}{more}")
        return lines

    def print(self, console: Console | None = None) -> None:
        if console is None:
            from rich.console import Console

            console = Console()
        console.print(self.table())
        for line in self.details():
            console.print(line, highlight=False, markup=False)

    def __str__(self) -> str:
        rows = [
            f"{n}: loaded {len(p.loaded)}, missing {len(p.missing)}, unexpected "
            f"{len(p.unexpected)}, shape mismatch {len(p.mismatched)}"
            for n, p in self.parts.items()
        ]
        return "\n".join(rows + self.details())


def load_into(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    allow_shape_mismatch: bool = False,
    source: str = "",
) -> LoadReport:
    """Load ``state_dict`` into the whole (unwrapped) model in one shot, strict=False.

    Keys whose shapes differ from the model's are an error naming them all, unless
    ``allow_shape_mismatch`` (then they are skipped and reported). Missing
    ``num_batches_tracked`` buffers (checkpoints from torch < 0.4.1) are tolerated.
    """
    model = unwrap(model)
    state = strip_module_prefix(state_dict)
    own = model.state_dict()
    report = LoadReport(source=source)
    for name in dict.fromkeys([_part_of(k) for k in own] + [_part_of(k) for k in state]):
        report.part(name)
    to_load: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if key not in own:
            report.part(_part_of(key)).unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.part(_part_of(key)).mismatched.append(
                (key, tuple(value.shape), tuple(own[key].shape))
            )
        else:
            to_load[key] = value
            report.part(_part_of(key)).loaded.append(key)
    if report.mismatched and not allow_shape_mismatch:
        shown = "; ".join(f"{k}: checkpoint {a}, model {b}" for k, a, b in report.mismatched[:10])
        more = f" (and {len(report.mismatched) - 10} more)" if len(report.mismatched) > 10 else ""
        raise TsrxError(
            f"checkpoint{' ' + source if source else ''} does not fit the model: "
            f"{len(report.mismatched)} shape mismatch(es): {shown}{more}. "
            "Set model.allow_shape_mismatch = true to skip these keys"
        )
    for key in own:
        if key not in state:
            if key.endswith("num_batches_tracked"):
                report.tolerated.append(key)
            else:
                report.part(_part_of(key)).missing.append(key)
    model.load_state_dict(to_load, strict=False)
    return report


def parameter_counts(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """Per part: (number of tensors, number of elements of floating tensors other than
    BatchNorm running statistics), a file-only estimate of the parameter count."""
    out: dict[str, tuple[int, int]] = {}
    for key, value in state.items():
        n_tensors, n_params = out.get(_part_of(key), (0, 0))
        is_stat = key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
        counted = value.numel() if value.is_floating_point() and not is_stat else 0
        out[_part_of(key)] = (n_tensors + 1, n_params + counted)
    return out
