"""A checkpoint turned back into its model and reader, for pictures and ``tsrx sr``.

Opened by tsrx.engine.loading.open_checkpoint, the path of ``tsrx eval`` and
``tsrx.load_model`` (tsrx checkpoints and the official files a reader knows). The reader is the
model's own recognizer (with its head) or a judge (``--judge`` or the config's ``[eval]``);
with neither there are no readings, never guesses from an untrained recognizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tsrx.errors import TsrxError

if TYPE_CHECKING:
    from tsrx.engine.loading import Loaded


def load(
    checkpoint: str | Path, device: str | None = None, judges: list[str] | tuple[str, ...] = ()
) -> Loaded:
    """Model, config and reader of a checkpoint (``judges``: ``--judge NAME=WEIGHTS`` values)."""
    from tsrx.engine.judge_build import parse_cli_judges
    from tsrx.engine.loading import open_checkpoint

    return open_checkpoint(checkpoint, device=device).with_judges(
        cli=parse_cli_judges(list(judges))
    )


def bicubic_up(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """LR shown at HR size, as the protocol's bicubic baseline does (RGB only)."""
    return torch.nn.functional.interpolate(lr[:, :3], size, mode="bicubic", align_corners=False)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B, C, H, W) floats in [0, 1] -> list of (H, W, 3) uint8 arrays."""
    x = images[:, :3].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return [a for a in x.permute(0, 2, 3, 1).cpu().numpy()]


def is_correct(pred: str, label: str) -> bool:
    from tsrx.models.text import normalize_for_accuracy

    return normalize_for_accuracy(pred) == normalize_for_accuracy(label)


def sr_of(model: Any, lr: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The SR part on ``lr`` under ``precision`` (tsrx.engine.precision), in float32."""
    from tsrx.engine.precision import as_float32, autocast

    sr = getattr(model, "sr", None)
    if sr is None:
        raise TsrxError(
            "this checkpoint's model has no SR part ([model.sr]); nothing to super-resolve"
        )
    with torch.no_grad(), autocast(precision, lr.device, "--precision"):
        out: torch.Tensor = as_float32(sr(lr))
    return out
