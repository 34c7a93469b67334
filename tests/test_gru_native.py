"""The native bf16 GRU step (plugins/gru_native.py): the same math as the torch ops, used only
where it may be (bfloat16, no autograd, CPU), and the torch ops wherever it cannot be had."""

from __future__ import annotations

import pytest
import torch
from native_unavailable import WAYS, make_unavailable

from tsrx_builtin import gru_native, gru_scan, native_build, tsrn


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    """A fresh build in this test's folder (no kernel loaded earlier in the process)."""
    monkeypatch.setenv("TSRX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(gru_native.ENV, raising=False)
    monkeypatch.setattr(native_build, "_loaded", {})
    return tmp_path


def _native_or_skip():
    step = gru_native.step_function()
    if step is None:
        pytest.skip("no C compiler here: the torch ops run (tested below)")
    return step


def test_the_step_computes_the_gru_gates_of_bfloat16_inputs_and_rounds_once(kernel_cache):
    step = _native_or_skip()
    assert list((kernel_cache / "kernels").glob("gru_step_*.so"))  # built and cached
    torch.manual_seed(0)
    n, k, length = 6, 16, 3
    bf = torch.bfloat16
    gx, gh = torch.randn(2, n, 3 * k).to(bf), torch.randn(2, n, 3 * k).to(bf)
    b_n, h_prev = torch.randn(2, k).to(bf), torch.randn(2, n, k).to(bf)
    gx[1, 2, 5] = float("nan")  # a NaN input stays NaN in its own output only
    for first in (1, 0):
        h = torch.empty(2, n, k, dtype=bf)
        out = torch.zeros(n // length, 2, length, 2 * k, dtype=bf)  # (b, T, L, 2k): T = 2
        sb, _, sl, _ = out.stride()
        base = out.data_ptr()
        step(n, k, first, gx.data_ptr(), gh.data_ptr(), b_n.data_ptr(), h_prev.data_ptr(),
             h.data_ptr(), base, base + (out.stride(1) + k) * 2, length, sb, sl)  # fmt: skip
        # the GRU's gates in float64 from the same bfloat16 values (gx's n part is 2 x_n)
        x, g = gx.double(), gh.double() * (1 - first)
        hp = h_prev.double() * (1 - first)
        r = torch.sigmoid(x[..., :k] + g[..., :k])
        z = torch.sigmoid(x[..., k : 2 * k] + g[..., k : 2 * k])
        new = torch.tanh((x[..., 2 * k :] + 2 * r * (g[..., 2 * k :] + b_n.double()[:, None])) / 2)
        want = ((1 - z) * new + z * hp).to(bf)
        # at most one bfloat16 step apart (the float32 arithmetic inside), NaN where it was
        assert torch.isnan(h[1, 2, 5]) and torch.isnan(h).sum() == 1
        diff = (h.double() - want.double()).abs()[~torch.isnan(h)]
        ulp = want.double().abs()[~torch.isnan(h)].clamp_min(1e-30) * 2**-7
        assert bool((diff <= ulp).all()), float((diff / ulp).max())
        # each direction's states also went to its output plane: forward at time 0, reverse at 1
        images = out.view(n // length, 2, length, 2 * k)
        torch.testing.assert_close(images[:, 0, :, :k].reshape(n, k), h[0], rtol=0, atol=0)
        torch.testing.assert_close(
            images[:, 1, :, k:].reshape(n, k), h[1], rtol=0, atol=0, equal_nan=True
        )


def _bf16_scan(block, x):
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return block(x).float()


@pytest.mark.parametrize("along_height", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
def test_a_bf16_evaluation_scan_with_the_native_step_is_as_close_to_float32_as_the_torch_ops(
    along_height, groups, kernel_cache, monkeypatch
):
    _native_or_skip()
    monkeypatch.setattr(gru_scan, "_parallel_groups", lambda images: groups)
    monkeypatch.setattr(gru_scan, "SCAN_CHUNK_ROWS", 40)  # several row chunks per group
    torch.manual_seed(0)
    block = tsrn.GruBlock(32, along_height=along_height).eval()  # hidden 16
    x = torch.randn(4, 32, 6, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        exact = block(x.to(torch.bfloat16).float())  # fp32 math on the bf16 input
    native = _bf16_scan(block, x)
    monkeypatch.setenv(gru_native.ENV, "0")
    ops = _bf16_scan(block, x)
    assert native.shape == ops.shape == exact.shape
    assert not torch.equal(native, ops)  # a different computation ran
    native_err, ops_err = (native - exact).abs().max(), (ops - exact).abs().max()
    assert native_err < 0.02 and native_err <= ops_err * 1.05, (native_err, ops_err)


def test_the_native_step_runs_only_in_bfloat16_without_autograd(kernel_cache, monkeypatch):
    calls = []
    monkeypatch.setattr(gru_native, "step_function", lambda: calls.append(1) or None)
    torch.manual_seed(0)
    block = tsrn.GruBlock(32, along_height=False)
    x = torch.randn(2, 32, 3, 5).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        block(x)  # float32: the torch ops, bit for bit as before
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        block(x).float().sum().backward()  # training keeps its states for the backward
    assert calls == []
    _bf16_scan(block, x)
    assert calls  # asked for; None, so the torch ops ran


@pytest.mark.parametrize("how", WAYS)
def test_without_the_native_step_the_torch_ops_run(how, kernel_cache, monkeypatch):
    make_unavailable(how, gru_native.ENV, monkeypatch)
    assert gru_native.step_function() is None
    torch.manual_seed(0)
    block = tsrn.GruBlock(32, along_height=True)
    x = torch.randn(2, 32, 3, 5).contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(_bf16_scan(block, x)).all()
    assert not list(kernel_cache.glob("kernels/*.so"))
