"""Exact resume with 4 gloo ranks: bit-identical only when gradients are reduced per tensor
(``train.deterministic``), since DDP's first step in a new process uses other buckets."""

from __future__ import annotations

import pytest
import torch
from test_distributed_ddp import _train
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, weights, write_experiment  # noqa: F401

pytestmark = pytest.mark.slow


def test_four_rank_resume_is_bit_identical_with_deterministic(tmp_path, tiny_data, tiny_plugin):
    mp = pytest.MonkeyPatch()
    dirs = {}
    for name in ("straight", "resumed"):
        exp = write_experiment(tmp_path, tiny_data, tiny_plugin, name)
        exp.write_text(
            exp.read_text().replace(
                'sr = { type = "tiny_sr" }', 'sr = { type = "tiny_sr", dropout = 0.2 }'
            )
        )
        dirs[name] = prepare(exp, tmp_path / "runs", ["train.deterministic=true"])
    try:
        assert _train(dirs["straight"], 4) == "completed"
        assert _train(dirs["resumed"], 4, mp, stop_at=3) == "preempted"
        assert _train(dirs["resumed"], 4) == "completed"
    finally:
        mp.undo()
    a, b = weights(dirs["straight"] / "last.pth"), weights(dirs["resumed"] / "last.pth")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert metrics(dirs["straight"], "val") == metrics(dirs["resumed"], "val")
    assert metrics(dirs["resumed"], "run")[-1]["world_size"] == 4
