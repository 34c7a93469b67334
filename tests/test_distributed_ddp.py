"""DDP on the CPU with 2 gloo processes: the same result as 1 process, and exact resume.

Runs go through `tsrx train`'s own code path (spawned ranks, run directories).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, weights, write_experiment  # noqa: F401

pytestmark = pytest.mark.slow

# 1 vs 2 processes see the same global batches, but the per-rank losses are averaged over
# ranks by DDP instead of over one batch: the sums run in a different order, so the
# weights agree to float32 rounding, amplified a little by Adam over 8 steps.
RTOL, ATOL = 1e-4, 1e-5


def _train(run_dir, nproc, monkeypatch=None, stop_at=None):
    from tsrx.cli.train_cmd import train_run_dir

    if stop_at is not None:
        monkeypatch.setenv("TINY_STOP_AT", str(stop_at))
    try:
        return train_run_dir(run_dir, nproc, "cpu")
    finally:
        if monkeypatch is not None:
            monkeypatch.delenv("TINY_STOP_AT", raising=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data, tiny_plugin):
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("ddp")
    out = {}
    for name, nproc in (("one", 1), ("two", 2)):
        run_dir = prepare(write_experiment(tmp, tiny_data, tiny_plugin, name), tmp / "runs")
        out[name] = (run_dir, _train(run_dir, nproc))
    # exact resume: dropout makes the RNG streams matter
    for name in ("straight", "resumed"):
        exp = write_experiment(tmp, tiny_data, tiny_plugin, name)
        exp.write_text(
            exp.read_text().replace(
                'sr = { type = "tiny_sr" }', 'sr = { type = "tiny_sr", dropout = 0.2 }'
            )
        )
        out[name] = prepare(exp, tmp / "runs")
        assert out[name].joinpath("config.toml").read_text().count("dropout = 0.2") == 1
    out["straight_state"] = _train(out["straight"], 2)
    out["stopped_state"] = _train(out["resumed"], 2, mp, stop_at=3)
    out["stopped_metrics"] = metrics(out["resumed"], "train")
    out["resumed_state"] = _train(out["resumed"], 2)
    mp.undo()
    return out


def test_two_processes_match_one_process(runs):
    one, two = runs["one"][0], runs["two"][0]
    assert runs["one"][1] == runs["two"][1] == "completed"
    w1, w2 = weights(one / "last.pth"), weights(two / "last.pth")
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=RTOL, atol=ATOL, msg=k)
    l1 = [m["loss"] for m in metrics(one, "train")]
    l2 = [m["loss"] for m in metrics(two, "train")]
    assert len(l1) == len(l2) == 8
    assert l1 == pytest.approx(l2, rel=1e-4)
    v1 = metrics(one, "val")[-1]["result"]["average"]
    v2 = metrics(two, "val")[-1]["result"]["average"]
    assert v1["n"] == v2["n"] == 18
    assert v1["psnr"] == pytest.approx(v2["psnr"], rel=1e-4)
    assert metrics(two, "run")[0]["world_size"] == 2
    assert metrics(two, "run")[0]["batch_size_per_rank"] == 4
    # per-image records: both ranks' images gathered, in the single process's order
    from tsrx.records import read_records

    step = metrics(one, "val")[-1]["step"]
    r1, r2 = (read_records(d / "records" / f"val-step{step:08d}.npz") for d in (one, two))
    assert len(r1) == 18 and r1.same_images(r2) and r1.labels == r2.labels
    np.testing.assert_allclose(r2.rows["model"].psnr, r1.rows["model"].psnr, rtol=1e-4)


def test_ddp_and_single_process_checkpoints_have_identical_keys(runs):
    w1, w2 = weights(runs["one"][0] / "last.pth"), weights(runs["two"][0] / "last.pth")
    assert list(w1) == list(w2)
    assert all(not k.startswith("module.") for k in w2)


def test_stopped_and_resumed_run_is_bit_identical(runs):
    straight, resumed = runs["straight"], runs["resumed"]
    assert runs["stopped_state"] == "preempted"
    assert [m["step"] for m in runs["stopped_metrics"]] == [1, 2, 3]
    assert runs["straight_state"] == runs["resumed_state"] == "completed"
    a, b = weights(straight / "last.pth"), weights(resumed / "last.pth")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ta, tb = metrics(straight, "train"), metrics(resumed, "train")
    assert [m["step"] for m in tb] == list(range(1, 9))
    for x, y in zip(ta, tb):
        x.pop("samples_per_s"), y.pop("samples_per_s")
        assert x == y
    assert metrics(straight, "val") == metrics(resumed, "val")
    sa = json.loads((straight / "summary.json").read_text())
    sb = json.loads((resumed / "summary.json").read_text())
    assert sa["best"] == sb["best"] and sa["final"] == sb["final"]
    ba, bb = weights(straight / "best_psnr_model.pth"), weights(resumed / "best_psnr_model.pth")
    assert all(torch.equal(ba[k], bb[k]) for k in ba)


def test_resume_checkpoint_holds_the_whole_training_state(runs):
    ckpt = torch.load(runs["resumed"] / "last.pth", weights_only=True)
    assert ckpt["format"] == "tsrx" and ckpt["step"] == 8
    assert ckpt["optimizer"]["state"] and ckpt["scheduler"] is not None
    assert ckpt["rng"]["world_size"] == 2 and len(ckpt["rng"]["ranks"]) == 2
    ranks = ckpt["rng"]["ranks"]
    assert not torch.equal(ranks[0]["torch"], ranks[1]["torch"])  # per-rank seeds
    assert set(ranks[0]) == {"torch", "cuda", "numpy", "python"}
    assert ckpt["sampler"]["epoch"] == 1
    assert ckpt["config"]["train"]["steps"] == 8


def test_nonfinite_loss_stops_both_ranks_with_a_named_error(tmp_path, tiny_data, tiny_plugin):
    from tsrx.errors import TsrxError

    run_dir = prepare(
        write_experiment(tmp_path, tiny_data, tiny_plugin, "nan"),
        tmp_path / "runs",
        ['loss.sr={type = "tiny_nan", at = 2}'],
    )
    with pytest.raises(TsrxError, match=r"a rank failed: .*non-finite loss at step 2 .*sr=nan"):
        _train(run_dir, 2)  # neither rank is left waiting in a collective
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
