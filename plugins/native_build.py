"""Small C kernels built at first use by the machine's C compiler, cached, loaded by ctypes.

Why: a few CPU hot spots (the GRU recurrence, mish) are chains of small elementwise torch ops,
each a pass over memory with its own dispatch; one C loop does them in one pass. A kernel is
plain C built with ``-O3 -march=native`` by ``$CC`` (else ``cc``) and cached per source,
compiler and CPU under ``$TSRX_CACHE_DIR/kernels`` (else ``${XDG_CACHE_HOME:-~/.cache}/tsrx/
kernels``); ctypes releases the GIL while it runs, so kernels on several threads run side by
side. No compiler, a failed build or the kernel's switch set to 0: ``load_library`` returns
None and the caller runs its torch ops.

``VECTOR_MATH`` is the kernels' shared prelude: GCC/Clang vector types of 16 floats
(vectorized without intrinsics; where the CPU has no 512-bit vectors the compiler splits
them), a Cephes-style exponential (range reduction by ln 2, a degree-6 polynomial with the
constants of Cephes' ``expf``: relative error about 2e-7) and the sigmoid.
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
from collections.abc import Callable
from pathlib import Path

from tsrx.cache_dir import cache_dir
from tsrx.env_switch import switched_off
from tsrx_builtin.worker_pool import GrowingPool

log = logging.getLogger("tsrx.native_build")

VECTOR_WIDTH = 16  # floats per vector in VECTOR_MATH (its W)
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

_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], ctypes.CDLL | None] = {}


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


def load_library(source: str, stem: str, what: str, switch: str) -> ctypes.CDLL | None:
    """``source`` built by the machine's C compiler (``$CC``, else ``cc``), cached as
    ``kernels/<stem>_<key>.so`` and loaded; None, logged once, where it cannot be had or the
    environment variable ``switch`` is 0. ``what`` names the kernel in that message."""
    if switched_off(switch):
        return None
    asked = os.environ.get("CC", "").strip() or "cc"
    with _lock:
        loaded_key = (asked, stem, source)  # the text itself: no digest on every call
        if loaded_key in _loaded:  # looked up once per compiler and source (asked per call)
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


# Kernel calls side by side: a pool of plain threads (a kernel call holds no GIL and runs no
# torch op), sized by the largest split asked for
_SIDE_BY_SIDE = GrowingPool("tsrx-native")


def run_side_by_side(calls: list[Callable[[], int | None]]) -> list[int | None]:
    """Each call's result; the calls on threads of their own where there are several."""
    if len(calls) == 1:
        return [calls[0]()]
    pool = _SIDE_BY_SIDE.at_least(len(calls))
    return [future.result() for future in [pool.submit(call) for call in calls]]
