"""SR and recognition losses against values computed by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from tsrx.errors import ConfigError
from tsrx.registry import REC_LOSSES, SR_LOSSES


def build_sr(table):
    return SR_LOSSES.build(table, "loss.sr")


def ramp_image() -> torch.Tensor:
    """(1,1,2,3) image with rows [0, 1, 2]."""
    return torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]).reshape(1, 1, 2, 3)


def test_mse_covers_every_channel_including_the_mask():
    hr = torch.zeros(2, 4, 2, 2)
    sr = hr.clone()
    sr[:, 3] = 1.0  # only the mask channel differs: 1/4 of the elements, error 1
    assert build_sr({"type": "mse"})(sr, hr).item() == pytest.approx(0.25)


def test_gradient_map_central_differences_with_zero_padding():
    from tsrx_builtin.losses import gradient_map

    # horizontal (x[j+1]-x[j-1])/2 with 0 outside: [0.5, 1, 0.5]; vertical (x[i-1]-x[i+1])/2:
    # row 0 [0, -0.5, -1], row 1 [0, 0.5, 1]
    expected = torch.tensor([[0.5, math.sqrt(1.25), math.sqrt(1.25)]] * 2)
    got = gradient_map(ramp_image(), eps=0.0)[0, 0]
    assert torch.allclose(got, expected)


def test_gpl_is_l1_between_gradient_maps_on_rgb_only():
    sr = ramp_image().expand(1, 4, 2, 3).clone()
    sr[:, 3] = 100.0  # the mask channel must not count
    hr = torch.zeros_like(sr)
    loss = build_sr({"type": "gpl", "eps": 0.0})(sr, hr).item()
    assert loss == pytest.approx((0.5 + 2 * math.sqrt(1.25)) / 3)


def test_gpl_default_eps_keeps_gradients_finite_on_flat_images():
    sr = torch.full((1, 3, 4, 4), 0.5, requires_grad=True)
    hr = torch.full((1, 3, 4, 4), 0.5)
    build_sr({"type": "gpl"})(sr, hr).backward()
    assert torch.isfinite(sr.grad).all()


def test_textzoom_weighting_is_100_times_mse_plus_1e4_gpl():
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 4, 8, 8), torch.rand(2, 4, 8, 8)
    mse = build_sr({"type": "mse"})(sr, hr)
    gpl = build_sr({"type": "gpl"})(sr, hr)
    reference = build_sr({"type": "textzoom"})(sr, hr)
    assert reference.item() == pytest.approx((100 * (mse + 1e-4 * gpl)).item(), rel=1e-6)
    custom = build_sr({"type": "textzoom", "scale": 1, "mse_weight": 2, "gpl_weight": 0.5})(sr, hr)
    assert custom.item() == pytest.approx((2 * mse + 0.5 * gpl).item(), rel=1e-6)


def test_sr_loss_options_are_type_checked():
    with pytest.raises(ConfigError, match="loss.sr.scale"):
        build_sr({"type": "textzoom", "scale": "big"})


def two_step_logits() -> torch.Tensor:
    """(T=2, B=1, K=2) log-probabilities: step 1 p(blank)=0.4 p(a)=0.6, step 2 0.3 / 0.7."""
    return torch.tensor([[0.4, 0.6], [0.3, 0.7]]).log().reshape(2, 1, 2)


def test_ctc_sums_the_alignments_of_a_known_label():
    ctc = REC_LOSSES.build({"type": "ctc"}, "loss.recognition")
    # "a" in two steps: (a,a), (a,-), (-,a)
    p = 0.6 * 0.7 + 0.6 * 0.3 + 0.4 * 0.7
    loss = ctc(two_step_logits(), torch.tensor([1]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(p), rel=1e-5)


def test_ctc_applies_log_softmax_to_raw_logits():
    ctc = REC_LOSSES.build({"type": "ctc"}, "loss.recognition")
    shifted = two_step_logits() + 3.0  # a constant shift per step leaves softmax unchanged
    assert ctc(shifted, torch.tensor([1]), torch.tensor([1])).item() == pytest.approx(
        ctc(two_step_logits(), torch.tensor([1]), torch.tensor([1])).item(), rel=1e-5
    )


def test_ctc_batch_reduction_and_zero_infinity():
    logits = two_step_logits().expand(2, 2, 2).contiguous()
    targets, lengths = torch.tensor([1, 1, 1]), torch.tensor([1, 2])  # "a", then "aa"
    # "aa" needs a blank between the two a's: impossible in 2 steps -> inf -> zeroed
    loss = REC_LOSSES.build({"type": "ctc"}, "x")(logits, targets, lengths)
    assert loss.item() == pytest.approx(-math.log(0.88) / 2, rel=1e-5)
    strict = REC_LOSSES.build({"type": "ctc", "zero_infinity": False}, "x")
    assert math.isinf(strict(logits, targets, lengths).item())


def test_ctc_length_reduction_divides_by_target_length():
    logits = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.3, 0.6]]).log().reshape(2, 1, 3)
    targets, lengths = torch.tensor([1, 2]), torch.tensor([2])  # "ab": only path (a, b)
    nll = -math.log(0.5 * 0.6)
    batch = REC_LOSSES.build({"type": "ctc"}, "x")(logits, targets, lengths)
    per_len = REC_LOSSES.build({"type": "ctc", "reduction": "length"}, "x")(
        logits, targets, lengths
    )
    assert batch.item() == pytest.approx(nll, rel=1e-5)
    assert per_len.item() == pytest.approx(nll / 2, rel=1e-5)


def test_ctc_empty_label_is_all_blanks():
    loss = REC_LOSSES.build({"type": "ctc"}, "x")(
        two_step_logits(), torch.tensor([], dtype=torch.long), torch.tensor([0])
    )
    assert loss.item() == pytest.approx(-math.log(0.4 * 0.3), rel=1e-5)


def test_ctc_gradient_reaches_the_logits():
    logits = two_step_logits().clone().requires_grad_(True)
    REC_LOSSES.build({"type": "ctc"}, "x")(logits, torch.tensor([1]), torch.tensor([1])).backward()
    assert logits.grad.abs().sum() > 0
