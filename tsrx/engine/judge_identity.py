"""A frozen judge's identity: what decides its readings, as one digest (the reading store's key).

It covers: the recognizer's and head's classes (module + qualname); the source files of the
modules that define them, their bases and their submodules' classes (torch's and Python's
own are covered by their versions), of the modules of the same package those modules import
from (ASTER's beam search in ``tsrx_builtin.beam_search``) and of tsrx's CTC decoding, so an
edited preprocessing or decoding never reuses old readings (a helper two imports away, or
in another package, is not followed: ``reading_identity`` can name it); every
parameter and buffer (name, dtype, shape, bytes); the judge's options (its ``[eval.judges]``
table, less the weights' path, whose bytes are hashed); the torch version; the training
flags; and whatever the recognizer or head returns from an optional
``reading_identity() -> str`` (a recognizer whose weights are not torch tensors: ppocr's
ONNX file and onnxruntime version). A recognizer with no tensors and no ``reading_identity``
has no identity: its readings are not stored.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

VERSION = "1"  # of this digest's recipe: a change here leaves every older reading behind


def _skipped(name: str) -> bool:
    """Modules whose code the torch and Python versions stand for."""
    top = name.split(".")[0]
    return top in ("torch", "builtins") or top in sys.stdlib_module_names


def _source_files(modules: list[nn.Module]) -> list[str] | None:
    """The source files of every (non-torch) class in the modules' trees and MROs, of the
    modules of the same package their modules import from (a plugin's beam search helper),
    and of tsrx's CTC decoding (``Judge._read``); None when a class has no file (defined in
    an interactive session: nothing to digest)."""
    from tsrx.models import text

    files = {str(text.__file__)}
    homes: dict[str, types.ModuleType] = {}
    for module in modules:
        for sub in module.modules():
            for cls in type(sub).__mro__:
                if _skipped(cls.__module__):
                    continue
                home = sys.modules.get(cls.__module__)
                path = getattr(home, "__file__", None)
                if home is None or not path:
                    return None
                files.add(path)
                homes[cls.__module__] = home
    for name, home in homes.items():
        package = name.split(".")[0]
        for value in vars(home).values():
            dep = value.__name__ if isinstance(value, types.ModuleType) else None
            dep = dep or getattr(value, "__module__", None)
            if not isinstance(dep, str) or dep.split(".")[0] != package or _skipped(dep):
                continue
            path = getattr(sys.modules.get(dep), "__file__", None)
            if path and path.endswith(".py"):
                files.add(path)
    return sorted(files)


def identity(
    recognizer: nn.Module, head: nn.Module | None, options: dict[str, Any] | None
) -> tuple[str, dict[str, Any]] | None:
    """(digest, a description for ``identity.json``), or None when not storable."""
    from tsrx.engine.result_cache import file_sha256

    modules = [m for m in (recognizer, head) if m is not None]
    extra = []
    for m in modules:
        method = getattr(m, "reading_identity", None)  # an nn.Module attribute is typed Tensor
        if callable(method):
            extra.append(str(method()))
    tensors = [
        (f"{role}.{name}", t)
        for role, m in (("recognizer", recognizer), ("head", head))
        if m is not None
        for name, t in (*m.named_parameters(), *m.named_buffers())
    ]
    if not tensors and not extra:
        return None
    files = _source_files(modules)
    if files is None:
        return None
    classes = [f"{type(m).__module__}.{type(m).__qualname__}" for m in modules]
    about: dict[str, Any] = {
        "recipe": VERSION,
        "recognizer": classes[0],
        "head": classes[1] if head is not None else None,
        "options": options or {},
        "torch": torch.__version__,
        "training": [m.training for m in modules],
        "reading_identity": extra,
    }
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(about, sort_keys=True, default=str).encode())
    # by name and content, not by path: two checkouts of the same code share their readings
    for source in sorted(f"{Path(p).name} {file_sha256(Path(p))}" for p in files):
        h.update(source.encode() + b"\n")
    for name, t in tensors:
        t = t.detach()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    about["sources"] = len(files)
    about["tensors"] = len(tensors)
    return h.hexdigest(), about


__all__ = ["identity"]
