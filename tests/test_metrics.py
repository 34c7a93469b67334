"""Evaluation metrics: both protocols against hand-computed values on fixed tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tsrx.engine.metrics import (
    FIELDS,
    MetricAccumulator,
    count_correct,
    psnr_batch,
    psnr_per_image,
    ssim_batch,
    ssim_map,
    ssim_per_image,
    weighted_average,
)
from tsrx.errors import TsrxError


def images(b=2, c=4, h=32, w=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g)


def db(mse_255: float) -> float:
    return 20 * math.log10(255 / math.sqrt(mse_255))


# -- PSNR ------------------------------------------------------------------------------
def test_psnr_of_a_constant_offset_ignores_the_mask_and_is_unclamped():
    hr = images()
    sr = hr + 0.1  # values above 1 stay: the reference does not clamp
    sr[:, 3] = -5.0  # mask channel is not scored
    assert psnr_batch(sr, hr).item() == pytest.approx(20.0, abs=1e-4)  # 255 / 25.5 = 10
    assert psnr_per_image(sr, hr).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)


def test_textzoom_psnr_pools_mse_over_the_batch_per_image_does_not():
    hr = torch.zeros(2, 3, 4, 4)
    sr = hr.clone()
    sr[0] += 0.1
    sr[1] += 0.2
    assert psnr_batch(sr, hr).item() == pytest.approx(db((25.5**2 + 51.0**2) / 2), abs=1e-4)
    assert psnr_per_image(sr, hr).tolist() == pytest.approx([20.0, 20 * math.log10(5)], abs=1e-4)


def test_identical_images_have_infinite_psnr_and_unit_ssim():
    hr = images()
    assert math.isinf(psnr_batch(hr, hr.clone()).item())
    assert ssim_batch(hr, hr.clone()).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim_per_image(hr, hr.clone()).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


# -- SSIM ------------------------------------------------------------------------------
def test_ssim_of_constant_images_by_hand_inside_and_zero_padding_at_the_border():
    a, b = 0.6, 0.4
    sr, hr = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    m = ssim_map(sr, hr)
    # away from the border the windows see constants: variances 0, so SSIM = luminance term
    # (float32 E[x^2] - mu^2 leaves ~1e-7 of spurious variance against C2 = 9e-4: the
    # reference computes in float32 too, so constant regions read ~1e-4 low in both)
    c1 = 0.01**2
    interior = (2 * a * b + c1) / (a * a + b * b + c1)
    assert torch.allclose(m[:, :, 5:-5, 5:-5], torch.tensor(interior), atol=3e-4)
    # at a corner the zero padding darkens both windows and adds variance: a different value
    assert abs(m[0, 0, 0, 0].item() - interior) > 1e-3


def test_ssim_interior_matches_skimage_gaussian_ssim():
    from skimage.metrics import structural_similarity

    sr, hr = images(1, 3, 32, 128, seed=1), images(1, 3, 32, 128, seed=2)
    hr = 0.5 * hr + 0.5 * sr  # correlated, so the structure term matters
    ours = ssim_map(sr, hr)[0, :, 5:-5, 5:-5].mean().item()
    # skimage crops (win_size - 1) / 2 = 5 pixels, so only the interior is comparable;
    # its reflect-padded border is discarded, ours is zero-padded and kept (the reference)
    theirs = structural_similarity(
        sr[0].numpy().astype(np.float64),
        hr[0].numpy().astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=0,
    )
    assert ours == pytest.approx(theirs, abs=1e-5)
    assert ssim_batch(sr, hr).item() != pytest.approx(theirs, abs=1e-3)


def test_textzoom_ssim_is_the_mean_of_the_whole_batch_map():
    sr, hr = images(3, 3, 32, 128, seed=3), images(3, 3, 32, 128, seed=4)
    assert ssim_batch(sr, hr).item() == pytest.approx(ssim_map(sr, hr).mean().item(), rel=1e-6)
    # equal-sized images: batch SSIM equals the mean per-image SSIM (PSNR does not)
    assert ssim_batch(sr, hr).item() == pytest.approx(
        ssim_per_image(sr, hr).mean().item(), rel=1e-5
    )


def test_shape_mismatch_is_named():
    with pytest.raises(TsrxError, match=r"SR \(2, 3, 16, 64\) and HR \(2, 3, 32, 128\)"):
        psnr_batch(torch.zeros(2, 3, 16, 64), torch.zeros(2, 3, 32, 128))


# -- accuracy ----------------------------------------------------------------------------
def test_accuracy_normalises_case_and_punctuation_on_both_sides():
    assert count_correct(["Hello!", "WORLD", "caf"], ["hello", "w-o-r-l-d", "cafe"]) == 2
    with pytest.raises(TsrxError, match="3 predictions for 2 labels"):
        count_correct(["a", "b", "c"], ["a", "b"])


# -- accumulator -------------------------------------------------------------------------
def offset_batch(offsets, h=4, w=4):
    hr = torch.zeros(len(offsets), 3, h, w)
    sr = hr + torch.tensor(offsets).view(-1, 1, 1, 1)
    return sr, hr


def test_textzoom_protocol_averages_per_batch_values_over_batches():
    acc = MetricAccumulator("textzoom", ["easy"])
    acc.update("easy", *offset_batch([0.1, 0.2]), ["a", "b"], ["a", "x"])
    acc.update("easy", *offset_batch([0.1]), ["c"], ["C"])
    res = acc.compute()["splits"]["easy"]
    expected_psnr = (db((25.5**2 + 51.0**2) / 2) + 20.0) / 2
    assert res["n"] == 3 and res["acc"] == pytest.approx(2 / 3)
    assert res["psnr"] == pytest.approx(expected_psnr, abs=1e-4)


def test_per_image_protocol_averages_per_image_values():
    acc = MetricAccumulator("per-image", ["easy"])
    acc.update("easy", *offset_batch([0.1, 0.2]), ["a", "b"], ["a", "x"])
    acc.update("easy", *offset_batch([0.1]), ["c"], ["C"])
    res = acc.compute()["splits"]["easy"]
    assert res["psnr"] == pytest.approx((20.0 + 20 * math.log10(5) + 20.0) / 3, abs=1e-4)


def test_result_shape_and_sample_weighted_average():
    acc = MetricAccumulator("textzoom", ["easy", "hard"])
    acc.update("easy", *offset_batch([0.1, 0.1, 0.1]), ["a", "a", "a"], ["a", "a", "a"])
    acc.update("hard", *offset_batch([0.2]), ["a"], ["b"])
    res = acc.compute()
    assert res["protocol"] == "textzoom" and list(res["splits"]) == ["easy", "hard"]
    assert set(res["splits"]["easy"]) == {"n", "acc", "psnr", "ssim"}
    avg = res["average"]
    assert avg["n"] == 4 and avg["acc"] == pytest.approx(0.75)
    assert avg["psnr"] == pytest.approx((3 * 20.0 + 20 * math.log10(5)) / 4, abs=1e-4)


def test_missing_recognizer_or_images_give_none_not_zero():
    acc = MetricAccumulator("per-image", ["easy", "hard"])
    acc.update("easy", *offset_batch([0.1]))  # SR only: no accuracy
    acc.update("hard", None, None, ["a"], ["a"])  # recognition only: no PSNR
    res = acc.compute()
    assert res["splits"]["easy"]["acc"] is None and res["splits"]["hard"]["psnr"] is None
    assert res["average"]["acc"] == 1.0 and res["average"]["psnr"] == pytest.approx(20.0, abs=1e-4)


def run_batches(acc, batches):
    for split, offsets, preds, labels in batches:
        acc.update(split, *offset_batch(offsets), preds, labels)
    return acc


BATCHES = [
    ("easy", [0.1, 0.05], ["a", "b"], ["a", "b"]),
    ("hard", [0.3], ["a"], ["z"]),
    ("easy", [0.2], ["q"], ["q"]),
    ("hard", [0.02, 0.4], ["x", "y"], ["x", "n"]),
]


@pytest.mark.parametrize("protocol", ["textzoom", "per-image"])
def test_merge_and_state_tensor_sum_equal_a_single_pass(protocol):
    single = run_batches(MetricAccumulator(protocol, ["easy", "hard"]), BATCHES).compute()
    rank0 = run_batches(MetricAccumulator(protocol, ["easy", "hard"]), BATCHES[0::2])
    rank1 = run_batches(MetricAccumulator(protocol, ["easy", "hard"]), BATCHES[1::2])
    # what all_reduce(SUM) does with the flat state tensors
    state = rank0.state_tensor() + rank1.state_tensor()
    assert state.shape == (2 * len(FIELDS),) and state.dtype == torch.float64
    reduced = MetricAccumulator.from_state_tensor(protocol, ["easy", "hard"], state).compute()
    rank0.merge(rank1)
    for merged in (reduced, rank0.compute()):
        for split in ("easy", "hard"):
            assert merged["splits"][split] == pytest.approx(single["splits"][split], rel=1e-12)
        assert merged["average"] == pytest.approx(single["average"], rel=1e-12)


def test_state_of_other_splits_is_refused():
    acc = MetricAccumulator("textzoom", ["easy", "medium", "hard"])
    with pytest.raises(TsrxError, match="different splits"):
        acc.load_state_tensor(torch.zeros(2 * len(FIELDS), dtype=torch.float64))


def test_unknown_protocol_is_named():
    with pytest.raises(TsrxError, match="unknown protocol 'paper'.*textzoom, per-image"):
        MetricAccumulator("paper")


# -- the notebook's A-ACC ------------------------------------------------------------------
def test_weighted_average_of_the_textzoom_splits_fixes_the_notebook_number():
    # RESEARCH_NOTES.md, sidernn+mlp: E/M/H ACC 0.6962 / 0.5468 / 0.3931 on 1619/1411/1343;
    # the notebook printed A = 0.5532, the sample-weighted mean is 0.5549
    splits = {
        "easy": {"n": 1619, "acc": 0.6962, "psnr": None, "ssim": None},
        "medium": {"n": 1411, "acc": 0.5468, "psnr": None, "ssim": None},
        "hard": {"n": 1343, "acc": 0.3931, "psnr": None, "ssim": None},
    }
    avg = weighted_average(splits)
    assert avg["n"] == 4373
    assert round(avg["acc"], 4) == 0.5549
    assert avg["psnr"] is None


def _reduce_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        acc = run_batches(MetricAccumulator("textzoom", ["easy", "hard"]), BATCHES[rank::world])
        state = acc.state_tensor()
        dist.all_reduce(state)
        acc.load_state_tensor(state)
        torch.save(acc.compute(), f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_a_single_pass(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "result")
    mp.spawn(_reduce_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    single = run_batches(MetricAccumulator("textzoom", ["easy", "hard"]), BATCHES).compute()
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=True)
        for split in ("easy", "hard"):
            assert got["splits"][split] == pytest.approx(single["splits"][split], rel=1e-12)
        assert got["average"] == pytest.approx(single["average"], rel=1e-12)
