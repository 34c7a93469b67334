"""mish in C for float32 training (plugins/mish.py, ``_NativeMish``): as close to float64 as
``F.mish``, split among threads without changing a bit, and used only where it may be."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tsrx_builtin import mish as mish_module
from tsrx_builtin import native_build


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TSRX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(mish_module.NATIVE_ENV, raising=False)
    monkeypatch.setattr(native_build, "_loaded", {})
    if mish_module._native_kernels() is None:
        pytest.skip("no C compiler here: the chunked torch ops run (tests/test_models_tsrn.py)")
    return tmp_path


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(3, 6, 7, 11), (2, 5, 3, 1)])  # a tail shorter than a vector
def test_native_mish_is_as_close_to_float64_as_f_mish_in_value_and_gradient(
    layout, shape, kernel_cache
):
    torch.manual_seed(0)
    x = torch.randn(*shape) * 8
    x.view(-1)[:5] = torch.tensor([30.0, 20.0, 0.0, -50.0, -800.0])  # clamp, zero, underflow
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    leaf = x.clone().requires_grad_()
    y = mish_module.mish(leaf)
    assert type(y.grad_fn).__name__ == "_NativeMishBackward"
    assert y.stride() == F.mish(x).stride()
    exact = F.mish(x.double())
    assert (y.double() - exact).abs().max() <= 2 * (F.mish(x).double() - exact).abs().max()
    g = torch.randn_like(x)
    (got,) = torch.autograd.grad(y, leaf, g)
    x64 = x.double().requires_grad_()
    (want,) = torch.autograd.grad(F.mish(x64), x64, g.double())
    plain = x.clone().requires_grad_()
    (torch_grad,) = torch.autograd.grad(F.mish(plain), plain, g)
    native_err, torch_err = (
        (got.double() - want).abs().max(),
        (torch_grad.double() - want).abs().max(),
    )
    assert native_err <= 2 * torch_err + 1e-7, (native_err, torch_err)


def test_nan_stays_nan_and_the_split_among_threads_changes_no_bit(kernel_cache, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 33, 65) * 6  # 68,640 elements: a split at 2 threads, uneven parts
    x[1, 2, 3, 4] = float("nan")
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            leaf = x.clone().requires_grad_()
            monkeypatch.setattr(mish_module, "NATIVE_SPLIT", 1 << 12)  # parts of >= 4,096
            y = mish_module.mish(leaf)
            (grad,) = torch.autograd.grad(y, leaf, torch.ones_like(y))
            results.append((y, grad))
    finally:
        torch.set_num_threads(threads)
    (y1, g1), (y3, g3) = results
    torch.testing.assert_close(y1, y3, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(g1, g3, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(y1[1, 2, 3, 4]) and int(torch.isnan(y1).sum()) == 1


def test_native_mish_only_for_float32_training(kernel_cache, monkeypatch):
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():  # evaluation: the chunked torch ops, fp32 outputs as before
        torch.testing.assert_close(
            mish_module.mish(x.requires_grad_()), mish_module._ChunkedMish.apply(x.detach())
        )
    assert mish_module.mish(x.detach()).grad_fn is None  # no autograd wanted: chunked ops
    half = mish_module.mish(x.detach().bfloat16().requires_grad_())
    assert type(half.grad_fn).__name__ == "_ChunkedMishBackward"
    wide = mish_module.mish(x.detach().double().requires_grad_())
    assert type(wide.grad_fn).__name__ == "_ChunkedMishBackward"
    monkeypatch.setenv(mish_module.NATIVE_ENV, "0")
    off = mish_module.mish(x.detach().requires_grad_())
    assert type(off.grad_fn).__name__ == "_ChunkedMishBackward"
