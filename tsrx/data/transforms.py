"""TextZoom's preprocessing, exactly: every published TextZoom number depends on it.

From the TextZoom reference code (``resizeNormalize`` in its ``dataset.py``): Pillow bicubic
resize to the target size (aspect ratio not kept), ``ToTensor`` to [0, 1] with no mean/std
normalisation, and an optional 4th channel: ``img.convert('L')`` of the *resized* image,
``thres = mean`` of that gray array, pixel ``> thres -> 0`` else ``255`` (1.0 after ToTensor).

Images are kept as uint8 (C, H, W) until the batch is assembled, so the decoded cache and
DataLoader workers move 4x fewer bytes; ``to_float`` is ToTensor's ``x / 255``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from tsrx.errors import TsrxError

if TYPE_CHECKING:
    import torch

# what prepare_lr accepts: a Pillow image, an (H, W, 3) uint8 array, encoded bytes or a path
LrImage = Image.Image | np.ndarray | bytes | bytearray | str | os.PathLike[str]


def decode_image(data: bytes) -> Image.Image:
    """Encoded image bytes -> RGB Pillow image; raises ValueError on anything undecodable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # force the full decode now: truncated files fail here, not later
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(
            f"cannot decode image (not an image format Pillow reads; "
            f"{len(data)} bytes starting {data[:8]!r})"
        ) from None
    except Exception as exc:  # Pillow raises several unrelated types for bad bytes
        raise ValueError(f"cannot decode image ({type(exc).__name__}: {exc})") from exc


def text_mask(resized: Image.Image) -> np.ndarray:
    """TextZoom's binary mask of a resized RGB image: uint8 (H, W), 255 where gray <= mean."""
    gray = np.asarray(resized.convert("L"))
    thres = gray.mean()
    return np.where(gray > thres, 0, 255).astype(np.uint8)


def preprocess(img: Image.Image, size_hw: Sequence[int], mask: bool) -> np.ndarray:
    """Resize (bicubic, aspect not kept) to ``size_hw`` = (H, W); uint8 (C, H, W), C = 3 or 4."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if h <= 0 or w <= 0:
        raise TsrxError(f"image size must be positive (H, W), got {list(size_hw)}")
    resized = img.resize((w, h), Image.Resampling.BICUBIC)
    rgb = np.asarray(resized, dtype=np.uint8)
    planes = [rgb[:, :, 0], rgb[:, :, 1], rgb[:, :, 2]]
    if mask:
        planes.append(text_mask(resized))
    return np.ascontiguousarray(np.stack(planes, axis=0))


def prepare_lr(
    images: Iterable[LrImage], size_hw: Sequence[int] = (16, 64), mask: bool = True
) -> torch.Tensor:
    """Your own text crops as a TextZoom-trained model reads them: each resized to ``size_hw``
    (the model's LR size, (H, W)) exactly as TextZoom prepares its LR images (Pillow bicubic,
    aspect ratio not kept), with TextZoom's binary text mask as a 4th channel when ``mask``
    (``mask = sr.in_channels == 4`` for a backbone from ``tsrx.load_model``).

    ``images``: Pillow images, (H, W, 3) uint8 arrays, encoded bytes or file paths, any size.
    Returns a float32 tensor (B, 3 or 4, H, W) in [0, 1], ready for ``sr(x)``.
    """
    import torch

    arrays = []
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            try:
                with open(item, "rb") as f:
                    data = f.read()
            except OSError as exc:
                raise TsrxError(f"prepare_lr: image {i}: {item}: {exc.strerror or exc}") from None
            item = data
        if isinstance(item, (bytes, bytearray)):
            try:
                item = decode_image(bytes(item))
            except ValueError as exc:
                raise TsrxError(f"prepare_lr: image {i}: {exc}") from None
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise TsrxError(
                    f"prepare_lr: image {i}: expected an (H, W, 3) uint8 array, got "
                    f"{item.dtype} {item.shape}"
                )
            item = Image.fromarray(item)
        elif isinstance(item, Image.Image):
            item = item.convert("RGB")
        else:
            raise TsrxError(
                f"prepare_lr: image {i}: expected a Pillow image, an (H, W, 3) uint8 array, "
                f"bytes or a path, got {type(item).__name__}"
            )
        arrays.append(preprocess(item, size_hw, mask))
    if not arrays:
        raise TsrxError("prepare_lr: no images")
    return to_float(torch.from_numpy(np.stack(arrays)))


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 tensor -> float32 in [0, 1] (ToTensor's division); float tensors pass through."""
    import torch

    if x.dtype == torch.uint8:
        return x.float().div_(255)
    return x.float()
