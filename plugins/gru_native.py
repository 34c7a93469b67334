"""A GRU step's gates as one native loop, for bfloat16 evaluation on the CPU.

Why: in a bf16 TSRN evaluation forward the GRU scan is 60% of the time, and most of that is
the ~11 small elementwise ops of each step (sigmoids, adds, lerp, two strided copies), each
a separate pass over a (2, rows, 32..96) bfloat16 tensor that torch converts to float32 and
back (docs/performance.md, "bf16 recurrence"). One C loop per step reads the projected gates
once, computes in float32 and writes the new state (rounded to bfloat16 once) both into the
state buffer and straight into the NHWC output. The matrix products stay torch's.

Only the bf16 forward without autograd uses it (``gru_scan._scan_rows``); float32 training
has its own kernel (``gru_native_train``), float32 evaluation the torch ops, so fp32 tables
are unchanged. Built and cached by ``native_build`` (the machine's C compiler, at first use);
no compiler, a failed build, or ``TSRX_NATIVE_GRU=0``: the torch ops run as before. The
hidden size must be a multiple of 16, else the torch ops run. float32 inside: the
exponential's relative error (about 2e-7) is far below bfloat16's 4e-3.
"""

from __future__ import annotations

import ctypes

from tsrx_builtin import native_build

ENV = "TSRX_NATIVE_GRU"
VECTOR_WIDTH = native_build.VECTOR_WIDTH

C_SOURCE = (
    native_build.VECTOR_MATH
    + r"""
typedef uint16_t vh __attribute__((vector_size(32)));

static inline vf load_bf16(const uint16_t *p) {
    vh h;
    __builtin_memcpy(&h, p, sizeof h);
    vu u = __builtin_convertvector(h, vu) << 16;
    return (vf)u;
}

/* round to nearest even; a NaN stays a (quiet) NaN */
static inline void store_bf16(uint16_t *p, vf f) {
    vu u = (vu)f;
    vu rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    vu nan = (u >> 16) | 0x40u;
    vu m = (vu)((u & 0x7FFFFFFFu) > 0x7F800000u);
    vu r = (nan & m) | (rounded & ~m);
    vh h = __builtin_convertvector(r, vh);
    __builtin_memcpy(p, &h, sizeof h);
}

/* One step of both directions (d = 0 forward, 1 reverse) over n rows; k a multiple of W.
   gx (2, n, 3k): input projections r|z|2 x_n with the r|z hidden biases added;
   gh (2, n, 3k): W_hh h_prev (unused when first); b_n (2, k); h_prev, h (2, n, k).
   Row i = (image i / length, position i % length) of direction d also goes to
   out_d + image * sb + position * sl (elements). All bfloat16. */
void tsrx_gru_step_bf16(int64_t n, int64_t k, int32_t first,
                        const uint16_t *gx, const uint16_t *gh, const uint16_t *b_n,
                        const uint16_t *h_prev, uint16_t *h,
                        uint16_t *out_fwd, uint16_t *out_rev,
                        int64_t length, int64_t sb, int64_t sl) {
    for (int d = 0; d < 2; d++) {
        uint16_t *out = d ? out_rev : out_fwd;
        const uint16_t *bn = b_n + d * k;
        for (int64_t i = 0; i < n; i++) {
            int64_t row = d * n + i;
            const uint16_t *x = gx + row * 3 * k;
            const uint16_t *g = gh + row * 3 * k;
            const uint16_t *hp = h_prev + row * k;
            uint16_t *hr = h + row * k;
            uint16_t *o = out + (i / length) * sb + (i % length) * sl;
            for (int64_t j = 0; j < k; j += W) {
                vf ar = load_bf16(x + j), az = load_bf16(x + k + j);
                vf gn = load_bf16(bn + j), hv = (vf){};
                if (!first) {
                    ar += load_bf16(g + j);
                    az += load_bf16(g + k + j);
                    gn += load_bf16(g + 2 * k + j);
                    hv = load_bf16(hp + j);
                }
                vf r = vsigmoid(ar), z = vsigmoid(az);
                vf nn = 2.0f * vsigmoid(load_bf16(x + 2 * k + j) + 2.0f * r * gn) - 1.0f;
                vf hn = nn + z * (hv - nn);
                store_bf16(hr + j, hn);
                store_bf16(o + j, hn);
            }
        }
    }
}
"""
)


def step_function():
    """The native bf16 step (a ctypes function), or None where it cannot be had."""
    library = native_build.load_library(C_SOURCE, "gru_step", "bf16 GRU step", ENV)
    if library is None:
        return None
    fn = library.tsrx_gru_step_bf16
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [i64, i64, ctypes.c_int32, *[ptr] * 7, i64, i64, i64]
    fn.restype = None
    return fn
