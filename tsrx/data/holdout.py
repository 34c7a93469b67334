"""Which split a run validates on, and the held-out one (``data.holdout``).

Real TextZoom has no validation split: without ``[data.val]`` the checkpoints would be
selected on the test split they are then reported on. ``data.holdout = N`` takes N images of
the training set as the validation split ``holdout`` and trains on the rest. Which images is
a seeded order of the training positions (``data.holdout_seed``, not the run's ``seed``): it
depends only on that seed and the training set's size, not on the machine, the process or
the torch version, so runs of different seeds validate on the same images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from tsrx.errors import TsrxError

HOLDOUT = "holdout"  # the name of the held-out validation split


def holdout_order(size: int, seed: int) -> list[int]:
    """The positions ``0..size-1`` in the seeded order: sorted by SHA-256 of ``seed:position``.

    A hash rather than a random generator, so the order is the same everywhere; a larger
    ``holdout`` of the same seed keeps the images of a smaller one.
    """
    return sorted(range(size), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())


def split_positions(
    size: int, count: int, seed: int, what: str = "the training set"
) -> tuple[list[int], list[int]]:
    """(held-out, training) positions of a training set of ``size`` samples, each ascending."""
    if not 0 <= count < size:
        raise TsrxError(
            f"data.holdout = {count}: {what} has {size} usable sample(s); hold out fewer "
            "than that (some must remain to train on)"
        )
    order = holdout_order(size, seed)
    return sorted(order[:count]), sorted(order[count:])


class PartOf(Dataset[dict[str, Any]]):
    """The samples of ``dataset`` at ``positions``, re-indexed ``0..len-1`` (an item's
    ``index`` too, as the dataset contract says). ``lmdb_index`` names the image by its
    1-based position in the whole dataset: unique across the dataset's LMDB roots."""

    def __init__(self, dataset: Dataset[dict[str, Any]], positions: Sequence[int], name: str):
        self.dataset, self.positions, self.name = dataset, list(positions), name

    @property
    def splits(self) -> list[Any]:
        """The whole dataset's LMDB splits (for messages that name its roots)."""
        return list(getattr(self.dataset, "splits", []))

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, position: int) -> dict[str, Any]:
        if not 0 <= position < len(self.positions):
            raise IndexError(f"index {position} out of range for {len(self.positions)} samples")
        item = dict(self.dataset[self.positions[position]])
        item["index"] = position
        return item

    def lmdb_index(self, position: int) -> tuple[str, int]:
        return self.name, self.positions[position] + 1


def holdout_settings(data_cfg: dict[str, Any]) -> tuple[int, int]:
    """(count, seed) of ``data.holdout``; (0, 0) for a config written before it existed."""
    return int(data_cfg.get("holdout") or 0), int(data_cfg.get("holdout_seed") or 0)


def validation_source(data_cfg: dict[str, Any]) -> str:
    """What the run validates on: ``"val"`` ([data.val]), ``"holdout"``, ``"test"`` (no
    validation split: the test tables, or [data.val] naming exactly them) or ``"none"``."""
    val, test = data_cfg.get("val") or {}, data_cfg.get("test") or {}
    if val:
        return "test" if val == test else "val"
    if holdout_settings(data_cfg)[0]:
        return HOLDOUT
    return "test" if test else "none"


def validation_splits(data_cfg: dict[str, Any]) -> list[str]:
    """The names of the validation splits (what a selector may name)."""
    source = validation_source(data_cfg)
    if source == HOLDOUT:
        return [HOLDOUT]
    if source == "none":
        return ["easy", "medium", "hard"]
    return list(data_cfg.get("val") or data_cfg.get("test") or {})


def selection_on_test_warning(data_cfg: dict[str, Any]) -> str | None:
    """The warning for a run whose checkpoints are selected on its test split, else None."""
    if validation_source(data_cfg) != "test":
        return None
    why = "[data.val] names the test tables" if data_cfg.get("val") else "no [data.val]"
    return (
        f"{why}: the run validates on the test split, so its best_* checkpoints are "
        "selected on the split they are reported on (the report marks them). Hold out "
        "training images instead with data.holdout = N (e.g. 1000 on TextZoom), or name a "
        "validation split in [data.val]"
    )


def validation_record(data_cfg: dict[str, Any]) -> dict[str, Any]:
    """What summary.json records of the validation data."""
    count, seed = holdout_settings(data_cfg)
    source = validation_source(data_cfg)
    record: dict[str, Any] = {"source": source, "on_test": source == "test"}
    if source == HOLDOUT:
        record.update(holdout=count, holdout_seed=seed)
    return record
