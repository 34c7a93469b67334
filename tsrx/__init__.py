"""tsrx: an experiment framework for scene text image super-resolution (STISR).

The core knows no concrete model: backbones, recognizers, heads, losses and
selectors arrive as plugins (see ``tsrx.plugins``).
"""

__version__ = "0.1.0"


def load_model(path, device="cpu", plugins=()):
    """The model a checkpoint holds (tsrx or official format), weights loaded, in eval mode:
    an SR backbone, a recognizer, or the joint model. For notebooks::

        import tsrx
        sr = tsrx.load_model("runs/sr_pretrain/main/best_psnr_model.pth")

    ``plugins``: files or modules providing components the checkpoint names (nothing named
    inside a checkpoint is imported on its say-so).
    """
    from tsrx.engine.loading import load_model as _load  # torch is imported only when asked

    return _load(path, device, plugins=plugins)
