"""tsrx: an experiment framework for scene text image super-resolution (STISR).

The core knows no concrete model: backbones, recognizers, heads, losses and
selectors arrive as plugins (see ``tsrx.plugins``).
"""

__version__ = "0.1.0"
