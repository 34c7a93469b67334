"""The ``precision`` option, implemented once: autocast around a forward pass.

Why one module: ``train.precision``, ``eval.precision`` and the commands' ``--precision`` must
mean the same thing. ``fp32`` runs nothing differently (exact, the default); ``bf16`` runs
the forward under ``torch.autocast`` in bfloat16 (CPU or CUDA: on a CPU with AVX512_BF16 /
AMX the convolutions run several times faster, docs/performance.md); ``fp16`` under CUDA
autocast only (training adds a gradient scaler). What leaves a forward is handed on in
float32 (:func:`as_float32`), so metrics and judges never see reduced precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from tsrx.errors import TsrxError

AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_precision(precision: str, device: torch.device | str, where: str) -> None:
    """Refuse a value that is not a precision, and fp16 off CUDA, naming ``where`` it was set."""
    if precision not in AUTOCAST_DTYPES:
        raise TsrxError(
            f"{where} {precision!r}: expected one of {', '.join(AUTOCAST_DTYPES)} "
            "(fp32: exact, the default; bf16: bfloat16 autocast; fp16: CUDA only)"
        )
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise TsrxError(
            f"{where} 'fp16' needs a CUDA device (this one is {torch.device(device)}); "
            "on a CPU use 'bf16' or 'fp32'"
        )


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str, where: str) -> Iterator[None]:
    """The forward pass under ``precision`` on ``device`` (``fp32``: no autocast at all)."""
    check_precision(precision, device, where)
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=dtype):
        yield


def as_float32(out: Any) -> Any:
    """A forward's output with its reduced-precision floating tensors in float32 (a tensor,
    or the values of a dict); anything else as it is."""
    if torch.is_tensor(out):
        return out.float() if out.is_floating_point() and out.dtype != torch.float64 else out
    if isinstance(out, dict):
        return {k: as_float32(v) if torch.is_tensor(v) else v for k, v in out.items()}
    return out
