"""tsrx: an experiment framework for scene text image super-resolution (STISR).

The core knows no concrete model: backbones, recognizers, heads, losses and
selectors arrive as plugins (see ``tsrx.plugins``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tsrx.openmp_wait import shorten_idle_spin

shorten_idle_spin()  # before anything loads torch (tsrx/openmp_wait.py says why)

if TYPE_CHECKING:  # for annotations only: `import tsrx` imports neither torch nor tsrx.data
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    import torch
    from torch import nn

    from tsrx.data.transforms import LrImage

__version__ = "0.1.0"


def load_model(
    path: str | Path,
    device: str | torch.device | None = "cpu",
    plugins: Sequence[str] = (),
) -> nn.Module:
    """The model a checkpoint holds (tsrx or official format), weights loaded, in eval mode:
    an SR backbone, a recognizer, or the joint model. For notebooks::

        import tsrx
        sr = tsrx.load_model("runs/sr_pretrain/main/best_psnr_model.pth")

    ``plugins``: files or modules providing components the checkpoint names (nothing named
    inside a checkpoint is imported on its say-so).
    """
    from tsrx.engine.loading import load_model as _load  # torch is imported only when asked

    return _load(path, device, plugins=plugins)


def prepare_lr(
    images: Iterable[LrImage], size_hw: Sequence[int] = (16, 64), mask: bool = True
) -> torch.Tensor:
    """Your own text crops as a TextZoom-trained model reads them (bicubic resize to the LR
    size, TextZoom's text mask as a 4th channel when ``mask``): a float tensor (B, C, H, W)
    in [0, 1]. For a backbone from ``load_model``::

        sr = tsrx.load_model("tsrn.pth")
        x = tsrx.prepare_lr(["crop1.png", "crop2.jpg"], mask=sr.in_channels == 4)
        with torch.no_grad():
            y = sr(x)[:, :3]  # (B, 3, 32, 128): the RGB image (channel 4: the mask)

    See tsrx.data.transforms.prepare_lr.
    """
    from tsrx.data.transforms import prepare_lr as _prepare

    return _prepare(images, size_hw, mask)
