"""mish(x) = x tanh(softplus(x)) on the CPU with one exponential per element, in cache-sized
chunks; ``F.mish`` elsewhere.

Why: torch's CPU kernels evaluate exp, log1p and tanh per element (three transcendental
functions forward, as many backward) and the TSRN-family blocks spend 7% of a train step in
them. With e = exp(x) and n = e (e + 2), tanh(softplus(x)) = n / (n + 2) and the derivative
is n / (n + 2) + 4 x e (e + 1) / (n + 2)^2, so one exp does for both passes; the few
elementwise ops run over chunks that stay in cache. Batch 64, 2 threads, a (64, 64, 16, 64)
activation: forward 11.7 -> 9.4 ms, backward 9.5 -> 7.4 ms (docs/performance.md). Errors
against float64: forward the same as ``F.mish`` (2.9e-7 relative), backward smaller.

In float32 training on the CPU the same formulas run as one C loop per pass (``MISH_SOURCE``,
built by ``native_build``; ``TSRX_NATIVE_MISH=0`` or no compiler: the chunked torch ops), the
tensor split among torch's threads: the quickstart TSRN's two mish layers took 7.9 ms of a
52 ms train step as torch ops (docs/performance.md, "mish in C"). Evaluation and the other
dtypes keep the torch ops, so fp32 tables are unchanged.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from tsrx_builtin import native_build

# Elements per chunk: a chunk's three float32 temporaries (1.5 MiB) fit this CPU's L2 + L3
# slice; 32K-element chunks ran 30% slower (per-op overhead), 128K as fast as 64K-256K
CHUNK = 1 << 17
# exp(20)^2 is far inside float32's range, and tanh(softplus(20)) is 1 in float32
_EXP_CLAMP = 20.0


# Half-precision CPU tensors (bf16 autocast hands mish a convolution's bfloat16 output) are
# computed chunk by chunk in float32 and rounded once: ``F.mish`` on bfloat16 ran 2.4x slower
# than this float32 path at 2 threads (a (64, 64, 16, 64) activation: 8.2 vs 3.4 ms)
_COMPUTED_IN_FLOAT32 = (torch.bfloat16, torch.float16)


NATIVE_ENV = "TSRX_NATIVE_MISH"
MISH_SOURCE = r"""
static inline vf vload(const float *p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { __builtin_memcpy(p, &v, sizeof v); }

/* e = exp(min(x, 20)), n = e (e + 2): tanh(softplus(x)) = n / (n + 2) */
static inline vf mish_of(vf x, vf *e_out, vf *n_out) {
    vf e = vexp(select_f(x > 20.0f, (vf){} + 20.0f, x));
    *e_out = e;
    *n_out = e * (e + 2.0f);
    return x * (*n_out / (*n_out + 2.0f));
}

static inline vf mish_slope(vf x) {
    vf e, n;
    mish_of(x, &e, &n);
    vf q = 1.0f / (n + 2.0f);
    return n * q + 4.0f * x * e * (e + 1.0f) * q * q;
}

/* y = mish(x) over n floats; a tail shorter than a vector through a zero-padded copy */
void tsrx_mish_f32(int64_t n, const float *x, float *y) {
    int64_t i = 0;
    vf e, m;
    for (; i + W <= n; i += W) vstore(y + i, mish_of(vload(x + i), &e, &m));
    if (i < n) {
        float in[W] = {0}, out[W];
        for (int64_t j = i; j < n; j++) in[j - i] = x[j];
        vstore(out, mish_of(vload(in), &e, &m));
        for (int64_t j = i; j < n; j++) y[j] = out[j - i];
    }
}

/* out = grad * mish'(x) over n floats */
void tsrx_mish_back_f32(int64_t n, const float *x, const float *grad, float *out) {
    int64_t i = 0;
    for (; i + W <= n; i += W) vstore(out + i, vload(grad + i) * mish_slope(vload(x + i)));
    if (i < n) {
        float in[W] = {0}, g[W] = {0}, res[W];
        for (int64_t j = i; j < n; j++) { in[j - i] = x[j]; g[j - i] = grad[j]; }
        vstore(res, vload(g) * mish_slope(vload(in)));
        for (int64_t j = i; j < n; j++) out[j] = res[j - i];
    }
}
"""
_FULL_SOURCE = native_build.VECTOR_MATH + MISH_SOURCE
# Elements per kernel call when a tensor is split among threads (smaller ones: one call)
NATIVE_SPLIT = 1 << 16


def _native_kernels():
    """(forward, backward) of ``MISH_SOURCE`` as ctypes functions, or None."""
    library = native_build.load_library(_FULL_SOURCE, "mish_f32", "float32 mish", NATIVE_ENV)
    if library is None:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    forward, backward = library.tsrx_mish_f32, library.tsrx_mish_back_f32
    forward.argtypes, forward.restype = [i64, ptr, ptr], None
    backward.argtypes, backward.restype = [i64, ptr, ptr, ptr], None
    return forward, backward


def _native_pass(kernel, *flats: torch.Tensor) -> None:
    """``kernel(n, *pointers)`` over the flat float32 tensors, split among torch's threads."""
    total = flats[0].numel()
    parts = max(1, min(torch.get_num_threads(), total // NATIVE_SPLIT))
    bounds = [total * i // parts // 16 * 16 for i in range(parts)] + [total]
    size = flats[0].element_size()

    def call(lo: int, hi: int):
        return lambda: kernel(hi - lo, *(f.data_ptr() + lo * size for f in flats))

    native_build.run_side_by_side([call(lo, hi) for lo, hi in zip(bounds, bounds[1:])])


def mish(x: torch.Tensor) -> torch.Tensor:
    """``F.mish(x)``, computed by ``_ChunkedMish`` where that is faster (float CPU tensors)."""
    if (
        x.device.type != "cpu"
        or x.dtype not in (torch.float32, torch.float64, *_COMPUTED_IN_FLOAT32)
        or _flat(x) is None
        or torch.compiler.is_compiling()
    ):
        return F.mish(x)
    if (
        x.dtype == torch.float32
        and x.requires_grad
        and torch.is_grad_enabled()
        and _native_kernels() is not None
    ):
        return _NativeMish.apply(x)  # float32 training
    return _ChunkedMish.apply(x)


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """``t``'s elements in memory order as a 1-D view (contiguous or channels_last), or None."""
    if t.is_contiguous():
        return t.view(-1)
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1).view(-1)
    return None


def _chunks(*flats: torch.Tensor):
    """Aligned slices of equally long 1-D tensors, ``CHUNK`` elements at a time."""
    total = flats[0].numel()
    for start in range(0, total, CHUNK):
        yield tuple(f[start : start + CHUNK] for f in flats)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in _COMPUTED_IN_FLOAT32 else x.dtype


def _widened(chunk: torch.Tensor, buffer: torch.Tensor | None) -> torch.Tensor:
    """``chunk`` itself, or a half-precision chunk copied into a float32 buffer."""
    if buffer is None:
        return chunk
    return buffer[: chunk.numel()].copy_(chunk)


class _ChunkedMish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty_like(x)  # same memory format as x
        width, dtype = min(CHUNK, x.numel()), _compute_dtype(x)
        half = dtype != x.dtype
        e_buf, n_buf = x.new_empty(width, dtype=dtype), x.new_empty(width, dtype=dtype)
        x_buf = x.new_empty(width, dtype=dtype) if half else None
        for xs, ys in _chunks(_flat(x), _flat(y)):
            e, n, xw = e_buf[: xs.numel()], n_buf[: xs.numel()], _widened(xs, x_buf)
            torch.clamp(xw, max=_EXP_CLAMP, out=e).exp_()
            torch.add(e, 2, out=n).mul_(e)  # n = e (e + 2)
            torch.add(n, 2, out=e)
            torch.div(n, e, out=e if half else ys).mul_(xw)  # x n / (n + 2)
            if half:
                ys.copy_(e)
        ctx.save_for_backward(x)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, grad, out = _backward_operands(ctx, grad)
        width, dtype = min(CHUNK, x.numel()), _compute_dtype(x)
        half = dtype != x.dtype
        e_buf, n_buf, q_buf = (x.new_empty(width, dtype=dtype) for _ in range(3))
        x_buf, g_buf = (x.new_empty(width, dtype=dtype) if half else None for _ in range(2))
        for xs, gs, outs in _chunks(_flat(x), _flat(grad), _flat(out)):
            m = xs.numel()
            e, n, q = e_buf[:m], n_buf[:m], q_buf[:m]
            xw, gw = _widened(xs, x_buf), _widened(gs, g_buf)
            torch.clamp(xw, max=_EXP_CLAMP, out=e).exp_()
            torch.add(e, 2, out=n).mul_(e)  # n = e (e + 2)
            torch.add(n, 2, out=q).reciprocal_()  # q = 1 / (n + 2)
            n.mul_(q)  # tanh(softplus(x))
            torch.addcmul(e, e, e, out=e).mul_(q).mul_(q)  # e (e + 1) q^2
            torch.addcmul(n, e, xw, value=4, out=q)  # the derivative
            torch.mul(q, gw, out=q if half else outs)
            if half:
                outs.copy_(q)
        return out


class _NativeMish(torch.autograd.Function):
    """``_ChunkedMish``'s formulas in one C pass each way (float32, CPU, dense layouts)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty_like(x)  # same memory format as x
        forward, _ = _native_kernels()
        _native_pass(forward, _flat(x), _flat(y))
        ctx.save_for_backward(x)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, grad, out = _backward_operands(ctx, grad)
        _, backward = _native_kernels()
        _native_pass(backward, _flat(x), _flat(grad), _flat(out))
        return out


def _backward_operands(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The saved input, the gradient in its memory format, and an output laid out alike."""
    (x,) = ctx.saved_tensors
    return x, grad.contiguous(memory_format=_memory_format(x)), torch.empty_like(x)


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    return torch.contiguous_format if t.is_contiguous() else torch.channels_last
