"""From a resolved ``[data]`` section to DataLoaders: datasets, the training collate, and a
resumable distributed sampler.

The sampler counts what the trainer *consumed* (``advance``), not what the DataLoader
prefetched, so a checkpoint taken mid-epoch resumes at the next unseen batch.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tsrx.data.transforms import to_float
from tsrx.errors import TsrxError

if TYPE_CHECKING:
    from tsrx.data.config import SynthSpec

log = logging.getLogger("tsrx.data")


# what every dataset yields and collate_batch turns into a batch: lr, hr, label, index
SampleDataset = Dataset[dict[str, Any]]


def collate_batch(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Items -> the batch of the contract: float ``lr``/``hr`` in [0, 1] (mask channel 0/1),
    ``label`` list[str], ``index`` LongTensor of dataset positions."""
    return {
        "lr": to_float(torch.stack([it["lr"] for it in items])),
        "hr": to_float(torch.stack([it["hr"] for it in items])),
        "label": [it["label"] for it in items],
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
    }


class ResumableSampler(Sampler[int]):
    """Deterministic per (seed, epoch) shuffle, one disjoint shard per rank, resumable mid-epoch.

    Every rank draws the same permutation and takes every ``world_size``-th element from
    ``rank`` on. ``drop_last`` drops the tail that does not divide evenly; otherwise the
    permutation is padded from its start so that all ranks see the same number of samples.
    The trainer calls ``advance(n)`` after consuming ``n`` samples on this rank;
    ``state_dict()`` then says where to resume, and ``set_epoch(e)`` for a new epoch
    starts it from the beginning.
    """

    def __init__(
        self,
        num_samples: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise TsrxError(f"sampler: rank {rank} is not in [0, world_size={world_size})")
        if num_samples < (world_size if drop_last else 1):
            raise TsrxError(
                f"sampler: {num_samples} samples cannot be sharded over {world_size} rank(s)"
            )
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch = 0
        self.position = 0
        if drop_last:
            self.per_rank = num_samples // world_size
        else:
            self.per_rank = -(-num_samples // world_size)

    def shard(self, epoch: int | None = None) -> list[int]:
        """This rank's whole ordered shard for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        if total > len(order):
            order = (order * (total // len(order) + 1))[:total]
        return order[:total][self.rank :: self.world_size]

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def advance(self, n: int) -> None:
        """Record that the trainer consumed ``n`` more samples of this rank's shard."""
        self.position = min(self.per_rank, self.position + n)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.position :])

    def __len__(self) -> int:
        return self.per_rank - self.position

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            epoch, position = int(state["epoch"]), int(state["position"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TsrxError(
                f"sampler state {state!r}: expected {{'epoch': int, 'position': int}}"
            ) from exc
        if not 0 <= position <= self.per_rank:
            raise TsrxError(
                f"sampler state position {position} is outside this rank's shard "
                f"of {self.per_rank} samples (was the data set or world size changed?)"
            )
        self.epoch, self.position = epoch, position


def single_thread_worker(worker_id: int) -> None:
    """A data-loader worker computes with one thread: N workers x all cores would oversubscribe
    the cores the trainer was given (see tsrx.engine.threads)."""
    os.environ["OMP_NUM_THREADS"] = "1"  # for libraries that start their pools later
    torch.set_num_threads(1)


def build_loader(
    dataset: SampleDataset,
    batch_size_per_rank: int,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    drop_last: bool | None = None,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
) -> DataLoader[dict[str, Any]]:
    """A DataLoader with the training collate; persistent workers when ``num_workers > 0``.

    Without a sampler the order is sequential (evaluation), and the last short batch is kept.
    """
    if batch_size_per_rank < 1:
        raise TsrxError(f"batch size per rank must be >= 1, got {batch_size_per_rank}")
    if drop_last is None:
        drop_last = sampler is not None
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = True
        kwargs["worker_init_fn"] = single_thread_worker
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_size=batch_size_per_rank,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_batch,
        drop_last=drop_last,
        pin_memory=pin_memory,
        **kwargs,
    )


PROVIDED = ("hr_size", "lr_size", "mask", "voc_type", "max_len", "skip_bad")


def build_dataset(table: dict[str, Any], data_cfg: dict[str, Any], where: str) -> SampleDataset:
    """One dataset from its table; the engine-provided arguments come from ``[data]``."""
    from tsrx.config.schema import signature_fields
    from tsrx.registry import DATASETS

    table = dict(table)
    # data.cache is the global switch; a table may still turn its own cache off
    if not data_cfg.get("cache", True) and isinstance(table.get("type"), str):
        if "cache" in signature_fields(DATASETS.get(table["type"]))[0]:
            table["cache"] = False
    context = {k: data_cfg[k] for k in PROVIDED}
    dataset: SampleDataset = DATASETS.build(table, where, root=str(data_cfg["root"]), **context)
    return dataset


def build_datasets(
    data_cfg: dict[str, Any],
) -> tuple[SampleDataset | None, dict[str, SampleDataset], dict[str, SampleDataset]]:
    """(train or None, val splits, test splits) from a resolved ``[data]`` section.

    With ``data.holdout = N`` (and no ``[data.val]``), ``val`` is ``{"holdout": N training
    images}`` and ``train`` the rest (tsrx.data.holdout). Otherwise ``val`` defaults to
    ``test`` when empty; split names are kept as written.
    """
    from tsrx.data.holdout import HOLDOUT, PartOf, holdout_settings, split_positions

    count, seed = holdout_settings(data_cfg)
    val_tables = data_cfg.get("val") or {}
    if count and val_tables:
        raise TsrxError(
            f"data.holdout = {count} and [data.val] ({', '.join(val_tables)}) both name the "
            "validation split: choose one"
        )
    train = None
    if data_cfg.get("train"):
        train = build_dataset(data_cfg["train"], data_cfg, "data.train")
    elif count:
        raise TsrxError(f"data.holdout = {count} needs [data.train] to hold images out of")
    test = {
        name: build_dataset(t, data_cfg, f"data.test.{name}")
        for name, t in (data_cfg.get("test") or {}).items()
    }
    val = {name: build_dataset(t, data_cfg, f"data.val.{name}") for name, t in val_tables.items()}
    if count and train is not None:
        roots = ", ".join(str(s.path) for s in getattr(train, "splits", []))
        what = f"data.train ({roots})" if roots else "data.train"
        held, rest = split_positions(len(cast(Sized, train)), count, seed, what)
        val = {HOLDOUT: PartOf(train, held, HOLDOUT)}
        train = PartOf(train, rest, "train")
    if not val:
        val = dict(test)
    return train, val, test


def has_data(root: str | Path) -> bool:
    """Whether ``root`` holds any LMDB (as a data root, or as an LMDB itself)."""
    root = Path(root)
    return root.is_dir() and any(root.glob("**/data.mdb"))


def ensure_synth(data_cfg: dict[str, Any]) -> bool:
    """Synthesise ``data.root`` when ``data.synth`` asks for it there and it holds no data; True
    if built. A root that does not exist and was not asked for is an error (tsrx.data.roots).

    Safe when several ranks call it at once: one builds under a file lock, the rest wait.
    """
    from tsrx.data.roots import check_root, may_synthesise

    spec = data_cfg.get("synth")
    root = Path(data_cfg["root"])
    check_root(data_cfg)
    if not spec or not may_synthesise(data_cfg):
        return False
    if has_data(root):
        return _ensure_val(root, spec)
    spec = _checked_synth(spec)
    from tsrx.data.synth import synthesize

    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / f".{root.name}.synth.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if has_data(root):
            return False
        log.info("synthesising TextZoom-format data into %s", root)
        synthesize(
            root,
            train=spec.train,
            test=spec.test,
            seed=spec.seed,
            fonts=spec.fonts,
            train2=spec.train2,
            val=spec.val,
        )
    return True


def _ensure_val(root: Path, spec: dict[str, Any]) -> bool:
    """A synthetic set made before ``data.synth.val`` existed gets its validation splits."""
    checked = _checked_synth(spec)
    if not any(checked.val) or (root / "val").exists() or not (root / "synth.json").is_file():
        return False
    from tsrx.data.synth import add_val

    with open(root.parent / f".{root.name}.synth.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        log.info("synthesising validation splits into %s/val", root)
        return add_val(root, checked.val, checked.seed, checked.fonts)


def _checked_synth(spec: dict[str, Any]) -> SynthSpec:
    """``data.synth`` as a SynthSpec, with file:key errors for unknown or mistyped keys.

    The table is checked here as well because an optional sub-table of a section is not
    checked field by field by the config loader (yet); a misspelt key must not be ignored.
    """
    from tsrx.config.schema import build_dataclass, check_table, dataclass_fields
    from tsrx.data.config import SynthSpec
    from tsrx.errors import ConfigError, ConfigIssue

    checked, problems = check_table(dict(spec), dataclass_fields(SynthSpec), "data.synth")
    if problems:
        raise ConfigError([ConfigIssue("<config>", k, m) for k, m in problems])
    synth: SynthSpec = build_dataclass(SynthSpec, checked, "data.synth")
    return synth
