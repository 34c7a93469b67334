"""Built-in datasets: TextZoom's LMDB format (the real data set and the synthetic one)."""

from __future__ import annotations

from tsrx.data.textzoom import TextZoomDataset
from tsrx.registry import DATASETS

DATASETS.register("textzoom", TextZoomDataset)
