"""``tsrx viz samples``: the test images a checkpoint super-resolves, with what the reader sees."""

from __future__ import annotations

from collections.abc import Sized
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from tsrx.errors import TsrxError
from tsrx.viz.inference import bicubic_up, is_correct, load, sr_of, to_uint8
from tsrx.viz.sheets import Sample, contact_sheet, save_png

if TYPE_CHECKING:
    from tsrx.data.loader import SampleDataset
    from tsrx.engine.loading import Loaded


def pick(n_items: int, n: int) -> list[int]:
    """``n`` positions spread evenly over the split (first and last included), deterministic."""
    if n_items <= 0 or n <= 0:
        return []
    if n >= n_items:
        return list(range(n_items))
    return sorted({int(round(x)) for x in np.linspace(0, n_items - 1, n)})


def split_samples(loaded: Loaded, dataset: SampleDataset, n: int) -> list[Sample]:
    from tsrx.data.loader import collate_batch

    # the registry's dataset contract (tsrx.contracts.check_dataset) requires __len__
    positions = pick(len(cast(Sized, dataset)), n)
    if not positions:
        return []
    batch = collate_batch([dataset[i] for i in positions])
    lr, hr = batch["lr"].to(loaded.device), batch["hr"].to(loaded.device)
    sr = sr_of(loaded.model, lr)
    up = bicubic_up(lr, (hr.shape[-2], hr.shape[-1]))
    with torch.no_grad():
        reads = {"lr": loaded.read(up), "sr": loaded.read(sr), "hr": loaded.read(hr)}
    pics = {"lr": to_uint8(up), "sr": to_uint8(sr), "hr": to_uint8(hr)}
    out = []
    for j, pos in enumerate(positions):
        label = batch["label"][j]
        index = int(dataset.lmdb_index(pos)[1]) if hasattr(dataset, "lmdb_index") else pos + 1
        r = {k: (v[j] if v is not None else None) for k, v in reads.items()}
        correct = {k: is_correct(v, label) for k, v in r.items() if v is not None}
        out.append(Sample(index, label, {k: pics[k][j] for k in pics}, r, correct))
    return out


def samples_sheet(
    checkpoint: Path,
    data_root: Path | None,
    output: Path,
    n: int = 24,
    splits: list[str] | None = None,
    device: str | None = None,
    scale: int = 2,
    judges: list[str] | tuple[str, ...] = (),
) -> tuple[Path, dict[str, list[Sample]]]:
    """Write the contact sheet of ``n`` samples per test split; returns (path, samples per split)."""
    from tsrx.data.loader import build_dataset

    loaded = load(checkpoint, device, judges)
    data = dict(loaded.config.get("data") or {})
    if data_root is not None:
        data["root"] = str(data_root)
    tests = data.get("test") or {}
    if not tests and data_root is not None:  # an official file's config names no splits
        from tsrx.engine.evaluator import textzoom_test_tables

        tests = textzoom_test_tables(data_root)
    if not tests:
        raise TsrxError(f"{checkpoint}: its config has no [data.test] splits to draw samples from")
    chosen = splits or list(tests)
    unknown = [s for s in chosen if s not in tests]
    if unknown:
        raise TsrxError(
            f"--split {unknown[0]!r}: the checkpoint's config has test splits {', '.join(tests)}"
        )
    sections = []
    for name in chosen:
        ds = build_dataset(tests[name], data, f"data.test.{name}")
        sections.append((name, split_samples(loaded, ds, n)))
    from tsrx.data.config import data_section

    hr = data_section({"data": data}).hr_size
    hr_size = (int(hr[0]), int(hr[1]))
    sheet = contact_sheet(sections, hr_size, scale)
    return save_png(sheet, output), dict(sections)
