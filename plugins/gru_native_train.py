"""A bidirectional GRU layer's float32 training recurrence on the CPU as two native loops.

Why: in the quickstart's TSRN (hidden 16, batch 16) the two GRU blocks' forward and backward
took 21 of a 73 ms train step, almost all of it the ~30 small torch ops that
``BiGruRecurrence`` runs per step and direction (docs/performance.md, "The training
recurrence in C"). Here the input projections of all steps are one matrix product (their
gradients two more), and what is left per step runs in C, one row's whole sequence at a time:
the hidden product, the gates, the new state and its write into the NHWC output; backward,
the gate gradients, the state's, and W_hh's and b_hn's gradients. The two directions run on
two threads (ctypes releases the GIL).

Where: float32 CPU tensors that need a backward, a hidden size that is a multiple of 16, no
dispatch mode active (a FLOP counter must see the ops), a process that keeps freed memory
(``tsrx.memory_reuse``: every tsrx command; its buffers span the whole sequence, and where
glibc hands them fresh pages on every call, as in a plain script at the official size, the
page faults cost what the kernel saves), ``TSRX_NATIVE_GRU`` not 0 and a C compiler to build
the kernel (``native_build``: built once per hidden size and CPU, cached). Evaluation,
bfloat16 and float64 keep their paths, so fp32 tables are unchanged.
Same math as ``BiGruRecurrence``; not the same rounding (another exponential, another order of
the sums): tests/test_gru_native_train.py holds it to float64 as closely as the torch ops.
"""

from __future__ import annotations

import ctypes

import torch
from torch.autograd.function import once_differentiable

from tsrx import memory_reuse
from tsrx_builtin import gru_native, gru_scan, native_build

SCAN_SOURCE = r"""
#include <stdlib.h>
#define KV (K / W)
#define G (3 * K)
/* rows computed side by side: independent chains for the FMA units (~12 accumulators) */
#define R ((64 / K) > 0 ? (64 / K) : 1)
/* what the forward keeps per time, row and direction: r | z | n | W_hn h + b_hn | h */
#define S (5 * K)

static inline vf vload(const float *p) { vf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
static inline vf bcast(float x) { return (vf){} + x; }
static inline vf vtanh(vf x) { return 2.0f * vsigmoid(2.0f * x) - 1.0f; }

/* offsets (elements) of rows i0 .. i0+R-1 in an image laid out by (i / L)*sb + (i % L)*sl;
   rows past the last repeat it */
static inline void row_offsets(int64_t i0, int64_t rows, int64_t L, int64_t sb, int64_t sl,
                               int64_t *off) {
    int64_t b = i0 / L, l = i0 % L;
    for (int q = 0; q < R; q++) {
        off[q] = b * sb + l * sl;
        if (q + 1 < rows && ++l == L) { l = 0; b++; }
    }
}

/* Forward of direction d (0: time 0..T-1, 1: T-1..0) over rows [r0, r1) of N, time step
   by time step (each step reads and writes its rows' memory in order).
   gx (T, N, 6K): x W_ih^T + b of both directions (r|z with the hidden r|z biases added);
   wt (K, 3K): this direction's W_hh transposed; bn (K): its b_hn. The state of (time t,
   row i) goes to out + t*st + (i / L)*sb + (i % L)*sl (this direction's channels) and,
   with the gates, to saved (T, N, 2, S). Returns 0, or -1 where memory ran out. */
int tsrx_gru_scan_f32(int64_t T, int64_t N, int64_t r0, int64_t r1, int32_t d,
                      const float *gx, const float *wt, const float *bn,
                      float *out, int64_t st, int64_t L, int64_t sb, int64_t sl,
                      float *saved) {
    float *hs = aligned_alloc(64, ((r1 - r0) * K * sizeof(float) + 63) / 64 * 64);
    if (!hs) return -1;
    for (int64_t s = 0; s < T; s++) {
        int64_t t = d ? T - 1 - s : s;
        for (int64_t i0 = r0; i0 < r1; i0 += R) {
            int64_t rows = r1 - i0 < R ? r1 - i0 : R;
            int64_t off[R];
            row_offsets(i0, rows, L, sb, sl, off);
            float *h[R];
            for (int q = 0; q < R; q++) h[q] = hs + (i0 - r0 + (q < rows ? q : 0)) * K;
            vf acc[R][3 * KV];
            for (int q = 0; q < R; q++)
                for (int j = 0; j < 3 * KV; j++) acc[q][j] = (vf){};
            if (s)
                for (int c = 0; c < K; c++) {
                    const float *wr = wt + c * G;
                    for (int j = 0; j < 3 * KV; j++) {
                        vf wv = vload(wr + j * W);
                        for (int q = 0; q < R; q++) acc[q][j] += bcast(h[q][c]) * wv;
                    }
                }
            for (int q = 0; q < rows; q++) {
                int64_t i = i0 + q;
                const float *x = gx + (t * N + i) * 2 * G + d * G;
                float *sv = saved + ((t * N + i) * 2 + d) * S;
                float *ot = out + t * st + off[q];
                for (int v = 0; v < KV; v++) {
                    vf r = vsigmoid(vload(x + v * W) + acc[q][v]);
                    vf z = vsigmoid(vload(x + K + v * W) + acc[q][KV + v]);
                    vf gn = acc[q][2 * KV + v] + vload(bn + v * W);
                    vf n = vtanh(vload(x + 2 * K + v * W) + r * gn);
                    vf hp = s ? vload(h[q] + v * W) : (vf){};
                    vf hn = n + z * (hp - n);
                    vstore(h[q] + v * W, hn);
                    vstore(ot + v * W, hn);
                    vstore(sv + v * W, r);
                    vstore(sv + K + v * W, z);
                    vstore(sv + 2 * K + v * W, n);
                    vstore(sv + 3 * K + v * W, gn);
                    vstore(sv + 4 * K + v * W, hn);
                }
            }
        }
    }
    free(hs);
    return 0;
}

/* Backward of direction d over rows [r0, r1), time step by time step from the last: from
   dout (strided like out) and saved, writes this direction's part of dgx (T, N, 6K):
   dr | dz | dn, the gradient of the input projections; adds W_hh's gradient into dw (3K, K)
   and b_hn's into dbn (K). w (3K, K): this direction's W_hh. Returns 0, or -1 where memory
   ran out. */
int tsrx_gru_scan_back_f32(int64_t T, int64_t N, int64_t r0, int64_t r1, int32_t d,
                           const float *saved, const float *w,
                           const float *dout, int64_t st, int64_t L, int64_t sb, int64_t sl,
                           float *dgx, float *dw, float *dbn) {
    float *dhs = calloc((r1 - r0) * K, sizeof(float));
    if (!dhs) return -1;
    vf dbn_acc[KV];
    for (int v = 0; v < KV; v++) dbn_acc[v] = (vf){};
    for (int64_t s = T - 1; s >= 0; s--) {
        int64_t t = d ? T - 1 - s : s;
        int64_t tp = d ? t + 1 : t - 1; /* the previous step's time */
        for (int64_t i0 = r0; i0 < r1; i0 += R) {
            int64_t rows = r1 - i0 < R ? r1 - i0 : R;
            int64_t off[R];
            row_offsets(i0, rows, L, sb, sl, off);
            float dg[R][G] __attribute__((aligned(64)));
            const float *hp[R];
            float *dh[R];
            for (int q = 0; q < R; q++) {
                int64_t i = i0 + (q < rows ? q : 0);
                dh[q] = dhs + (i - r0) * K;
                hp[q] = s ? saved + ((tp * N + i) * 2 + d) * S + 4 * K : saved; /* read where s > 0 */
            }
            for (int q = 0; q < rows; q++) {
                int64_t i = i0 + q;
                const float *sv = saved + ((t * N + i) * 2 + d) * S;
                const float *go = dout + t * st + off[q];
                float *x = dgx + (t * N + i) * 2 * G + d * G;
                for (int v = 0; v < KV; v++) {
                    vf r = vload(sv + v * W), z = vload(sv + K + v * W);
                    vf n = vload(sv + 2 * K + v * W), gn = vload(sv + 3 * K + v * W);
                    vf h_prev = s ? vload(hp[q] + v * W) : (vf){};
                    vf g = vload(dh[q] + v * W) + vload(go + v * W);
                    vf dn = g * (1.0f - z) * (1.0f - n * n);
                    vf dz = g * (h_prev - n) * z * (1.0f - z);
                    vf dr = dn * gn * r * (1.0f - r);
                    vf dgn = dn * r;
                    vstore(x + v * W, dr);
                    vstore(x + K + v * W, dz);
                    vstore(x + 2 * K + v * W, dn);
                    vstore(dg[q] + v * W, dr);
                    vstore(dg[q] + K + v * W, dz);
                    vstore(dg[q] + 2 * K + v * W, dgn);
                    vstore(dh[q] + v * W, g * z);
                    dbn_acc[v] += dgn;
                }
            }
            if (!s) continue;
            for (int q = rows; q < R; q++) /* padding rows: no gradient */
                for (int j = 0; j < G; j++) dg[q][j] = 0.0f;
            /* W_hh's gradient dw[j] += dg[j] h_prev; the state's dh += W_hh^T dg */
            vf back[R][KV];
            for (int q = 0; q < R; q++)
                for (int v = 0; v < KV; v++) back[q][v] = vload(dh[q] + v * W);
            for (int j = 0; j < G; j++) {
                for (int v = 0; v < KV; v++) {
                    vf wv = vload(w + j * K + v * W);
                    vf a = vload(dw + j * K + v * W);
                    for (int q = 0; q < R; q++) {
                        vf gq = bcast(dg[q][j]);
                        a += gq * vload(hp[q] + v * W);
                        back[q][v] += gq * wv;
                    }
                    vstore(dw + j * K + v * W, a);
                }
            }
            for (int q = 0; q < rows; q++)
                for (int v = 0; v < KV; v++) vstore(dh[q] + v * W, back[q][v]);
        }
    }
    for (int v = 0; v < KV; v++) vstore(dbn + v * W, vload(dbn + v * W) + dbn_acc[v]);
    free(dhs);
    return 0;
}
"""

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_FORWARD_ARGS = [_I64] * 4 + [ctypes.c_int32] + [_PTR] * 4 + [_I64] * 4 + [_PTR]
_BACKWARD_ARGS = [_I64] * 4 + [ctypes.c_int32] + [_PTR] * 3 + [_I64] * 4 + [_PTR] * 3


_sources: dict[int, str] = {}


def kernels(hidden: int):
    """(forward, backward) ctypes functions for this hidden size, or None."""
    if hidden % native_build.VECTOR_WIDTH:
        return None
    if hidden not in _sources:  # built once per hidden size: asked at every block and step
        _sources[hidden] = f"#define K {hidden}\n" + native_build.VECTOR_MATH + SCAN_SOURCE
    source = _sources[hidden]
    stem = f"gru_scan_f32_k{hidden}"
    library = native_build.load_library(source, stem, "float32 GRU scan", gru_native.ENV)
    if library is None:
        return None
    forward, backward = library.tsrx_gru_scan_f32, library.tsrx_gru_scan_back_f32
    forward.argtypes, forward.restype = _FORWARD_ARGS, ctypes.c_int
    backward.argtypes, backward.restype = _BACKWARD_ARGS, ctypes.c_int
    return forward, backward


def applies(seq: torch.Tensor, w_hh: torch.Tensor) -> bool:
    """Whether ``NativeBiGruRecurrence`` runs this (training) recurrence."""
    return (
        seq.device.type == "cpu"
        and seq.dtype == torch.float32
        and w_hh.dtype == torch.float32
        and not gru_scan.dispatch_modes_active()
        and memory_reuse.kept()
        and kernels(w_hh.shape[-1]) is not None
    )


def _tasks(rows: int) -> list[tuple[int, int, int]]:
    """(direction, first row, end row) per task: both directions, and with more than two
    torch threads each direction's rows split among them."""
    per_direction = max(1, torch.get_num_threads() // 2)
    per_direction = max(1, min(per_direction, rows // 64))
    bounds = [rows * i // per_direction for i in range(per_direction + 1)]
    return [(d, lo, hi) for d in (0, 1) for lo, hi in zip(bounds, bounds[1:])]


def _run(calls: list) -> None:
    """Run the kernel calls (closures): side by side where torch has two threads or more."""
    if torch.get_num_threads() < 2:
        failed = [call() for call in calls]
    else:
        failed = native_build.run_side_by_side(calls)
    if any(failed):
        raise MemoryError("the native GRU scan could not allocate its state buffer")


class NativeBiGruRecurrence(torch.autograd.Function):
    """``BiGruRecurrence`` (same arguments, output and gradients) with the recurrence in C."""

    @staticmethod
    def forward(ctx, seq, w_x, b_x, w_hh, b_hn, along_height: bool):
        t, b, length, c = seq.shape
        k = w_hh.shape[-1]
        n = b * length
        forward, _ = kernels(k)
        x = seq.contiguous().view(t * n, c)
        # every step's input projections of both directions at once: (T * N, 6k)
        gx = torch.addmm(b_x.reshape(6 * k), x, w_x.reshape(6 * k, c).t())
        out = seq.new_empty((b, t, length, 2 * k) if along_height else (b, length, t, 2 * k))
        scan = gru_scan.scan_view(out, along_height)
        st, sb, sl, _ = scan.stride()
        wt = w_hh.transpose(1, 2).contiguous()
        bn = b_hn.contiguous()
        saved = seq.new_empty(t, n, 2, 5 * k)
        size = out.element_size()

        def call(d: int, lo: int, hi: int):
            return lambda: forward(
                t, n, lo, hi, d, gx.data_ptr(), wt[d].data_ptr(), bn[d].data_ptr(),
                scan.data_ptr() + d * k * size, st, length, sb, sl, saved.data_ptr(),
            )  # fmt: skip

        _run([call(*task) for task in _tasks(n)])
        ctx.save_for_backward(x, w_x, w_hh, saved)
        ctx.shape, ctx.along_height = (t, b, length, c), along_height
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, w_x, w_hh, saved = ctx.saved_tensors
        t, b, length, c = ctx.shape
        k, n = w_hh.shape[-1], b * length
        _, backward = kernels(k)
        d_scan = gru_scan.scan_view(dout, ctx.along_height)
        if d_scan.stride(-1) != 1:
            d_scan = gru_scan.scan_view(dout.contiguous(), ctx.along_height)
        st, sb, sl, _ = d_scan.stride()
        dgx = x.new_empty(t * n, 6 * k)
        w = w_hh.contiguous()
        tasks = _tasks(n)
        d_w = x.new_zeros(len(tasks), 3 * k, k)
        d_bn = x.new_zeros(len(tasks), k)
        size = dout.element_size()

        def call(i: int, d: int, lo: int, hi: int):
            return lambda: backward(
                t, n, lo, hi, d, saved.data_ptr(), w[d].data_ptr(),
                d_scan.data_ptr() + d * k * size, st, length, sb, sl,
                dgx.data_ptr(), d_w[i].data_ptr(), d_bn[i].data_ptr(),
            )  # fmt: skip

        _run([call(i, *task) for i, task in enumerate(tasks)])
        direction = torch.tensor([d for d, _, _ in tasks])
        d_whh = torch.stack([d_w[direction == d].sum(0) for d in (0, 1)])
        d_bhn = torch.stack([d_bn[direction == d].sum(0) for d in (0, 1)])
        d_seq = (dgx @ w_x.reshape(6 * k, c)).view(t, b, length, c)
        d_wx = (dgx.t() @ x).view(2, 3 * k, c)
        d_bx = dgx.sum(0).view(2, 3 * k)
        return d_seq, d_wx, d_bx, d_whh, d_bhn, None
