"""The float32 training recurrence in C (plugins/gru_native_train.py): the same math as the
torch ops, as close to float64 as they are, and used only where it may be."""

from __future__ import annotations

import pytest
import torch
from native_unavailable import WAYS, make_unavailable
from torch.utils.flop_counter import FlopCounterMode

from tsrx import memory_reuse
from tsrx_builtin import gru_native, gru_native_train, gru_scan, native_build, tsrn


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    """A fresh build in this test's folder (no kernel loaded earlier in the process), in a
    process that keeps freed memory as a tsrx command's does."""
    monkeypatch.setattr(memory_reuse, "_state", "kept (as in a tsrx command)")
    monkeypatch.setenv("TSRX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(gru_native.ENV, raising=False)
    monkeypatch.setattr(native_build, "_loaded", {})
    return tmp_path


def _native_or_skip(hidden: int = 16):
    if gru_native_train.kernels(hidden) is None:
        pytest.skip("no C compiler here: the torch ops run (tested below)")


def _inputs(t, b, length, k, seed=0):
    """seq (T, B, L, 2k) and the weights, float64 leaves."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(t, b, length, 2 * k), (2, 3 * k, 2 * k), (2, 3 * k), (2, 3 * k, k), (2, k)]
    return [(torch.randn(*s, generator=g, dtype=torch.float64) * 0.5) for s in shapes]


def _run(fn, inputs, along_height, dout):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    if fn is gru_native_train.NativeBiGruRecurrence:
        out = fn.apply(*leaves, along_height)
    else:
        out = fn.apply(*leaves, along_height, True)
    out.backward(dout.to(out.dtype))
    return [out.detach().double()] + [x.grad.double() for x in leaves]


@pytest.mark.parametrize("k", [16, 32])
@pytest.mark.parametrize("along_height", [True, False])
@pytest.mark.parametrize("shape", [(5, 3, 7), (1, 2, 3)])
def test_native_scan_output_and_gradients_are_as_close_to_float64_as_the_torch_ops(
    k, along_height, shape, kernel_cache
):
    _native_or_skip(k)
    t, b, length = shape  # 21 and 6 rows: not a multiple of the rows computed side by side
    inputs = _inputs(t, b, length, k)
    out_shape = (b, t, length, 2 * k) if along_height else (b, length, t, 2 * k)
    dout = torch.randn(*out_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = _run(gru_scan.BiGruRecurrence, inputs, along_height, dout)
    floats = [x.float() for x in inputs]
    native = _run(gru_native_train.NativeBiGruRecurrence, floats, along_height, dout)
    ops = _run(gru_scan.BiGruRecurrence, floats, along_height, dout)
    names = ["output", "seq", "w_x", "b_x", "w_hh", "b_hn"]
    for name, e, n, o in zip(names, exact, native, ops):
        scale = e.abs().max().clamp_min(1e-30)  # T = 1: W_hh gets no gradient
        native_err, ops_err = (n - e).abs().max() / scale, (o - e).abs().max() / scale
        # float32 rounding, as the torch ops' (an exponential of its own, sums in other order)
        assert native_err < 4e-6 and native_err <= 3 * ops_err + 1e-7, (name, native_err, ops_err)


def test_rows_split_among_more_threads_give_the_same_result(kernel_cache):
    _native_or_skip()
    inputs = [x.float() for x in _inputs(4, 40, 8, 16)]  # 320 rows
    dout = torch.randn(40, 4, 8, 32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert len(gru_native_train._tasks(320)) == 2  # the two directions, one after the other
        one = _run(gru_native_train.NativeBiGruRecurrence, inputs, True, dout)
        torch.set_num_threads(6)
        assert len(gru_native_train._tasks(320)) == 6  # each direction's rows in three
        split = _run(gru_native_train.NativeBiGruRecurrence, inputs, True, dout)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, split):
        # the same arithmetic per row; only W_hh's and b_hn's sums over the rows regroup
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * float(a.abs().max()))


def _count_native(monkeypatch) -> list[int]:
    calls: list[int] = []
    forward = gru_native_train.NativeBiGruRecurrence.forward

    def counted(ctx, *args):
        calls.append(1)
        return forward(ctx, *args)

    monkeypatch.setattr(gru_native_train.NativeBiGruRecurrence, "forward", staticmethod(counted))
    return calls


def test_a_training_gru_block_runs_the_native_scan_and_learns_as_with_the_torch_ops(
    kernel_cache, monkeypatch
):
    _native_or_skip()
    calls = _count_native(monkeypatch)
    torch.manual_seed(0)
    block = tsrn.GruBlock(32, along_height=False)  # hidden 16
    x = torch.randn(3, 32, 4, 6).contiguous(memory_format=torch.channels_last)
    block(x).square().sum().backward()
    native = {n: p.grad.clone() for n, p in block.named_parameters()}
    assert calls == [1]
    block.zero_grad()
    monkeypatch.setenv(gru_native.ENV, "0")
    block(x).square().sum().backward()
    assert calls == [1]  # switched off: the torch ops
    for name, p in block.named_parameters():
        torch.testing.assert_close(native[name], p.grad, rtol=1e-4, atol=1e-5)


def test_the_native_scan_runs_only_for_float32_training(kernel_cache, monkeypatch):
    _native_or_skip()
    calls = _count_native(monkeypatch)
    torch.manual_seed(0)
    block = tsrn.GruBlock(32, along_height=True)
    x = torch.randn(2, 32, 3, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        block(x)  # evaluation: the torch ops, fp32 tables bit for bit as before
    block.double()(x.double()).sum().backward()  # float64: the torch ops
    with FlopCounterMode(display=False):  # a FLOP counter sees the torch ops it counts
        block.float()(x).sum().backward()
    odd = tsrn.GruBlock(24, along_height=True)  # hidden 12: not a multiple of 16
    odd(torch.randn(2, 24, 3, 5)).sum().backward()
    monkeypatch.setattr(memory_reuse, "_state", None)  # glibc's defaults: fresh pages per call
    block(x).sum().backward()
    assert calls == []
    monkeypatch.setattr(memory_reuse, "_state", "kept (as in a tsrx command)")
    block(x).sum().backward()
    assert calls == [1]


@pytest.mark.parametrize("how", WAYS)
def test_without_the_native_scan_training_runs_the_torch_ops(how, kernel_cache, monkeypatch):
    make_unavailable(how, gru_native.ENV, monkeypatch)
    assert gru_native_train.kernels(16) is None
    calls = _count_native(monkeypatch)
    block = tsrn.GruBlock(32, along_height=True)
    x = torch.randn(2, 32, 3, 5).contiguous(memory_format=torch.channels_last)
    block(x).sum().backward()
    assert calls == [] and all(torch.isfinite(p.grad).all() for p in block.parameters())
    assert not list(kernel_cache.glob("kernels/*.so"))


def test_the_kernel_is_built_once_per_hidden_size_and_cached(kernel_cache):
    _native_or_skip(16)
    _native_or_skip(32)
    built = sorted(p.name.split("_")[3] for p in (kernel_cache / "kernels").glob("*.so"))
    assert built == ["k16", "k32"]
    native_build._loaded.clear()  # a new process: loads the cached file, builds nothing
    assert gru_native_train.kernels(16) is not None
    assert len(list((kernel_cache / "kernels").glob("*.so"))) == 2
