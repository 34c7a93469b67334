"""A tsrx checkpoint turned back into its model and reader, for pictures and ``tsrx sr``.

The checkpoint's embedded config rebuilds the model; its weights are loaded in one shot.
The reader is the model's own recognizer (with its head) or the ``[eval]`` judge; with
neither there are no readings, never guesses from an untrained recognizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tsrx.errors import TsrxError


@dataclass
class Loaded:
    model: nn.Module
    config: dict
    judges: list[Any]  # tsrx.engine.judges.Judge; the first one reads
    device: torch.device

    @property
    def has_reader(self) -> bool:
        return bool(self.judges)

    @property
    def judge_name(self) -> str | None:
        return self.judges[0].description if self.judges else None

    def read(self, images: torch.Tensor) -> list[str] | None:
        """Readings of RGB images in [0, 1] (any size: the recognizer resizes them itself)."""
        return self.judges[0].read(images[:, :3]) if self.judges else None


def load(checkpoint: str | Path, device: str = "cpu", recognizer: str | None = None) -> Loaded:
    """Model, config and reader of a tsrx checkpoint (``recognizer``: judge weights to use)."""
    from tsrx.checkpoint import detect_format, load_checkpoint, load_into, state_dict_for
    from tsrx.engine.judges import build_judges
    from tsrx.models.build import build_model

    ckpt = load_checkpoint(checkpoint)
    if detect_format(ckpt) != "tsrx" or not isinstance(ckpt.get("config"), dict):
        raise TsrxError(
            f"{checkpoint}: not a tsrx checkpoint with an embedded config, so its model "
            "cannot be rebuilt; use a run's checkpoint, or compose one with `tsrx ckpt compose`"
        )
    config = ckpt["config"]
    from tsrx.checkpoint_components import require_checkpoint_components

    require_checkpoint_components(config, source=str(checkpoint), recorded=ckpt.get("plugins"))
    model = build_model(config, load_init=False)
    load_into(
        model,
        state_dict_for(ckpt),
        source=str(checkpoint),
        allow_shape_mismatch=(config.get("model") or {}).get("allow_shape_mismatch", False),
    )
    dev = torch.device(device)
    model.to(dev).eval()
    judges = [
        j.to(dev) for j in build_judges(config.get("eval") or {}, model, recognizer_path=recognizer)
    ]
    return Loaded(model, config, judges, dev)


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


def sr_of(model: Any, lr: torch.Tensor) -> torch.Tensor:
    sr = getattr(model, "sr", None)
    if sr is None:
        raise TsrxError(
            "this checkpoint's model has no SR part ([model.sr]); nothing to super-resolve"
        )
    with torch.no_grad():
        return sr(lr)
