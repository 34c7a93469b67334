"""A GRU step's gates as one native loop, for bfloat16 evaluation on the CPU.

Why: in a bf16 TSRN evaluation forward the GRU scan is 60% of the time, and most of that is
the ~11 small elementwise ops of each step (sigmoids, adds, lerp, two strided copies), each
a separate pass over a (2, rows, 32..96) bfloat16 tensor that torch converts to float32 and
back (docs/performance.md, "bf16 recurrence"). One C loop per step reads the projected gates
once, computes in float32 and writes the new state (rounded to bfloat16 once) both into the
state buffer and straight into the NHWC output. The matrix products stay torch's.

Only the bf16 forward without autograd uses it (``gru_scan._scan_rows``): the float32 path
and training are unchanged, so fp32 tables stay bit-identical. The loop is plain C built at
first use by the machine's C compiler (``$CC``, else ``cc``) with ``-O3 -march=native`` and
cached per source, compiler and CPU under ``$TSRX_CACHE_DIR/kernels`` (else
``${XDG_CACHE_HOME:-~/.cache}/tsrx/kernels``); it is called through ctypes, which releases
the GIL, so the scan's row groups still run side by side. No compiler, a failed build, or
``TSRX_NATIVE_GRU=0``: the torch ops run as before.

Written with GCC/Clang vector types (16 floats), so that it is vectorized without intrinsics
(where the CPU has no 512-bit vectors the compiler splits them); the hidden size must be a
multiple of 16, else the torch ops run. The exponential is a Cephes-style polynomial (range
reduction by ln 2, a degree-6 polynomial with the constants of Cephes' ``expf``): relative
error about 2e-7, far below bfloat16's 4e-3.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from tsrx.cache_dir import cache_dir

log = logging.getLogger("tsrx.gru_native")

ENV = "TSRX_NATIVE_GRU"
VECTOR_WIDTH = 16  # floats per vector in C_SOURCE (its W)
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fPIC", "-shared")

VECTOR_MATH = r"""
#include <stdint.h>

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
#define W 16

/* lanes of a where the mask is set, else of b */
static inline vf select_f(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }

static inline vf vexp(vf x) {
    vf c = select_f(x < -87.0f, (vf){} - 87.0f, x);
    c = select_f(c > 88.0f, (vf){} + 88.0f, c);
    vf t = c * 1.44269504088896341f + 0.5f;
    vi ni = __builtin_convertvector(t, vi);
    vf nf = __builtin_convertvector(ni, vf);
    ni += nf > t; /* floor: the mask is -1 where truncation rounded up */
    vf n = __builtin_convertvector(ni, vf);
    vf r = c - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = (vf){} + 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vf scale = (vf)((ni + 127) << 23);
    vf y = p * scale;
    return select_f(x != x, x, y);
}

static inline vf vsigmoid(vf x) { return 1.0f / (1.0f + vexp(-x)); }
"""

C_SOURCE = (
    VECTOR_MATH
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

_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], ctypes.CDLL | None] = {}


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "off", "false", "no")


def _cpu_signature() -> str:
    """The CPU's model and flags: ``-march=native`` code is only reused on the same kind."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    wanted = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(wanted))


def _build(compiler: str, source: str, target: Path) -> None:
    """Compile ``source`` into ``target`` atomically (another process may build it too)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / f"{target.stem}.c"
        src.write_text(source, encoding="utf-8")
        out = Path(tmp) / target.name
        subprocess.run(
            [compiler, *FLAGS, "-o", str(out), str(src)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(out, target)


def load_library(source: str, stem: str, what: str) -> ctypes.CDLL | None:
    """``source`` built by the machine's C compiler (``$CC``, else ``cc``), cached as
    ``kernels/<stem>_<key>.so`` and loaded; None, logged once, where it cannot be had.
    ``what`` names the kernel in that message."""
    if not enabled():
        return None
    asked = os.environ.get("CC", "").strip() or "cc"
    with _lock:
        loaded_key = (asked, stem, hashlib.sha256(source.encode()).hexdigest())
        if loaded_key in _loaded:  # looked up once per compiler and source (asked per block)
            return _loaded[loaded_key]
        library = None
        try:
            compiler = shutil.which(asked)
            if compiler is None:
                raise OSError(f"no C compiler {asked!r} on the PATH")
            version = subprocess.run(
                [compiler, "--version"], capture_output=True, text=True, timeout=30
            ).stdout
            key = hashlib.sha256(
                "\0".join((source, " ".join(FLAGS), version, _cpu_signature())).encode()
            ).hexdigest()[:24]
            folder = cache_dir()
            if folder is None:
                raise OSError("no cache folder (no HOME, TSRX_CACHE_DIR or XDG_CACHE_HOME)")
            target = folder / "kernels" / f"{stem}_{key}.so"
            if not target.is_file():
                _build(compiler, source, target)
            library = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            log.info(
                "the native %s is not available (%s%s); the torch ops run instead",
                what,
                exc,
                f": {detail.decode(errors='replace')[:500]}" if detail else "",
            )
        _loaded[loaded_key] = library
        return library


def step_function():
    """The native bf16 step (a ctypes function), or None where it cannot be had."""
    library = load_library(C_SOURCE, "gru_step", "bf16 GRU step")
    if library is None:
        return None
    fn = library.tsrx_gru_step_bf16
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [i64, i64, ctypes.c_int32, *[ptr] * 7, i64, i64, i64]
    fn.restype = None
    return fn
