"""The batches an evaluation reads and its bicubic baseline image, defined once.

Why a module of their own: the evaluator and the baseline read-ahead
(tsrx/engine/prefetch.py) must hand the judges byte-identical images, since the reading
store keys every reading by the image's bytes; both take them from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from tsrx.engine import distributed as dist_utils


def rank_batches(n: int, batch_size: int, env: dist_utils.DistEnv) -> list[list[int]]:
    """This rank's share of the fixed batch order: every ``world_size``-th batch."""
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    return batches[env.rank :: env.world_size]


def evaluation_batches(
    dataset: Any, batch_size: int, env: dist_utils.DistEnv | None = None
) -> Iterator[dict[str, Any]]:
    """The collated batches of ``dataset`` this rank evaluates, in order (no workers)."""
    from torch.utils.data import DataLoader

    from tsrx.data.loader import collate_batch

    env = env or dist_utils.DistEnv()
    loader = DataLoader(
        dataset,
        batch_sampler=rank_batches(len(dataset), batch_size, env),
        collate_fn=collate_batch,
        num_workers=0,
    )
    yield from loader


def bicubic_baseline(batch: dict[str, Any]) -> torch.Tensor:
    """The bicubic row's image: the batch's LR (RGB) upscaled to the HR size."""
    size = tuple(batch["hr"].shape[-2:])
    return torch.nn.functional.interpolate(
        batch["lr"][:, :3], size, mode="bicubic", align_corners=False
    )


__all__ = ["bicubic_baseline", "evaluation_batches", "rank_batches"]
