"""The judges' max pooling (plugins/maxpool.py): the same values as torch's ``max_pool2d`` bit
for bit, in its layout, and torch's own wherever a gradient flows or the options are not plain."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tsrx_builtin.maxpool import MaxPool2d


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [
        ((2, 2), (2, 2), (0, 0)),
        ((2, 1), (2, 1), (0, 0)),
        ((2, 2), (1, 1), (0, 0)),
        ((3, 2), (2, 3), (0, 0)),
        ((2, 2), (2, 1), (0, 1)),  # CRNN's
        ((3, 3), (2, 2), (1, 1)),
        ((3, 2), (1, 2), (1, 0)),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_strided_maximum_equals_max_pool2d_bit_for_bit(
    dtype, kernel, stride, padding, channels_last
):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 9, 13).to(dtype)  # odd sizes: floor mode drops the last rows
    x[0, 1, 2, 3] = float("nan")
    x[1, 2, 0, 0] = float("-inf")
    x[2, 0, :, 0] = float("-inf")  # a padded edge whose window holds only -inf
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = F.max_pool2d(x, kernel, stride, padding)
    with torch.no_grad():
        got = MaxPool2d(kernel, stride, padding)(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))
    assert got.stride() == want.stride()  # the layout the next layer gets is the same


def test_an_unbatched_input_pools_too():
    x = torch.randn(4, 8, 10)
    torch.testing.assert_close(MaxPool2d(2, 2)(x), F.max_pool2d(x, 2, 2), rtol=0, atol=0)


def test_with_autograd_torchs_own_pooling_and_its_gradient_run():
    # a tie: torch's backward gives one input the gradient, torch.maximum would split it
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    MaxPool2d(2, 2)(x).sum().backward()
    y = x.detach().clone().requires_grad_(True)
    nn.MaxPool2d(2, 2)(y).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, y.grad)
    assert x.grad.sum() == 1 and x.grad.max() == 1


@pytest.mark.parametrize(
    "options",
    [{"ceil_mode": True}, {"dilation": 2}, {"return_indices": True}],
)
def test_other_options_run_torchs_pooling(options, monkeypatch):
    import tsrx_builtin.maxpool as maxpool

    monkeypatch.setattr(maxpool, "strided_max", lambda *a: pytest.fail("not plain pooling"))
    x = torch.randn(2, 3, 9, 9)
    got = MaxPool2d(3, 2, **options)(x)
    want = nn.MaxPool2d(3, 2, **options)(x)
    for g, w in zip(got, want) if isinstance(got, tuple) else [(got, want)]:
        assert torch.equal(g, w)


def test_more_padding_than_torch_allows_gets_torchs_error():
    with pytest.raises(RuntimeError, match="pad should be"):
        with torch.no_grad():
            MaxPool2d(2, 2, padding=(0, 2))(torch.randn(1, 1, 4, 4))
