"""A bidirectional GRU layer's recurrence run by hand on the CPU, with its own backward.

Why: on CPU the TSRN-family GRU blocks (TSRN, TPGSR, TATT) are bound by memory traffic and
per-op overhead, not FLOPs, and ``nn.GRU`` there runs each direction's steps as separate
small ops; docs/performance.md ("The levers taken") has the measurements. Same math as
``nn.GRU`` (tests/test_models_tsrn.py: equal to 1e-10 in float64, output and every gradient).
The blocks that use it live with their models (``tsrn.GruBlock``); this module knows only
tensors.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.autograd.function import once_differentiable

from tsrx_builtin import gru_native
from tsrx_builtin.worker_pool import GrowingPool


class ScanOrder(torch.autograd.Function):
    """(B, C, H, W) channels_last -> contiguous (T, B, ., C), T the scanned axis.

    A plain ``permute().contiguous()`` would hand its gradient back in the scan order, a
    layout that is neither NCHW nor NHWC, and the batch norm backward before the block runs
    several times slower on it; this returns the gradient channels_last, as the input came.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, along_height: bool) -> torch.Tensor:
        ctx.along_height = along_height
        return (
            x.permute(2, 0, 3, 1).contiguous()
            if along_height
            else x.permute(3, 0, 2, 1).contiguous()
        )

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        back = grad.permute(1, 3, 0, 2) if ctx.along_height else grad.permute(1, 3, 2, 0)
        return back.contiguous(memory_format=torch.channels_last), None


def scan_view(nhwc: torch.Tensor, along_height: bool) -> torch.Tensor:
    """(B, H, W, C) -> the view (T, B, L, C) with T the scanned axis (no copy)."""
    return nhwc.permute(1, 0, 2, 3) if along_height else nhwc.permute(2, 0, 1, 3)


# Rows (of B * L) per chunk of a GruBlock scan: a step's tensors, both directions stacked,
# then span 2x this many rows; a wider batch (the height blocks: 64 x 64 rows) runs in row
# chunks, each op's buffers about 1 MiB (an L2 cache); unchunked it ran 7-15% slower at 1
# thread (docs/performance.md)
SCAN_CHUNK_ROWS = 2048


class BiGruRecurrence(torch.autograd.Function):
    """Both directions of a GRU layer over ``seq`` (T, B, L, C), step by step, by hand.

    ``seq`` is ``ScanOrder``'s output (T the scanned axis, L the other one); ``w_x`` (2,
    3k, C), ``b_x`` (2, 3k): each direction's input projection (r|z|n), the hidden r|z
    biases already added (they are summed before the sigmoid); ``w_hh`` (2, 3k, k);
    ``b_hn`` (2, k). Returns the image (B, H, W, 2k), NHWC: the forward direction's states in
    channels ``[:k]``, the reverse's in ``[k:]``, each step written in place.

    Why by hand: on CPU the GRU is bound by memory traffic and per-op overhead, not FLOPs.
    Projecting the whole sequence first writes and rereads a (T, N, 6k) tensor, 1.5x the
    input, most of it fresh memory (page faults); autograd over the per-step ops adds a
    graph node per op and step. Here both directions run in one step loop (step s: the
    forward direction at time s, the reverse at time T-1-s), their per-step tensors stacked
    as (2, N, .) so that each op (``bmm``/``baddbmm`` over the two directions' hidden weights,
    the elementwise gates) covers both: half the ops of running them one after the other,
    which counts where a step's tensors are small. Each step projects its two inputs (times
    s and T-1-s) with two ``addmm`` into the halves of one small reused buffer (cheaper than
    gathering them for one ``baddbmm``), the ops write into buffers (``out=``, in-place),
    and the backward likewise works per step, accumulating every gradient (input, weights,
    biases) as it goes. Rows are independent sequences: with several torch threads the
    batch's images are split into one group per thread (wide batches only), each scanned on
    its own worker thread (``_parallel_groups``), and a group runs in chunks of rows (``SCAN_CHUNK_ROWS``)
    so that a step's buffers stay cache-sized. Each gate tensor of a step is contiguous, and
    ``tanh`` is computed as ``2 sigmoid(2u) - 1`` (torch's CPU tanh runs several times slower).
    """

    @staticmethod
    def forward(ctx, seq, w_x, b_x, w_hh, b_hn, along_height: bool, keep_for_backward: bool):
        t, b, length, _ = seq.shape
        k = w_hh.shape[-1]
        out = seq.new_empty((b, t, length, 2 * k) if along_height else (b, length, t, 2 * k))
        out_scan = scan_view(out, along_height)
        groups = _row_groups(b, length, _parallel_groups(b) if seq.device.type == "cpu" else 1)
        # tanh(u) = 2 sigmoid(2u) - 1: the n gate's input projection doubled once here
        double_n = torch.ones_like(b_x[0])
        double_n[2 * k :] = 2.0
        w_x_t, w_t = (w_x * double_n[:, None]).transpose(1, 2), w_hh.transpose(1, 2)
        b_x, b_n = b_x * double_n, b_hn.unsqueeze(1)

        def forward_group(chunks: list[slice]) -> list:
            return [
                _scan_rows(seq[:, r], out_scan[:, r], w_x_t, b_x, w_t, b_n, keep_for_backward)
                for r in chunks
            ]

        steps = _map_groups(forward_group, groups)
        if keep_for_backward:
            ctx.save_for_backward(seq, w_x, w_hh)
            ctx.steps, ctx.groups, ctx.along_height = steps, groups, along_height
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        seq, w_x, w_hh = ctx.saved_tensors
        d_scan = scan_view(dout, ctx.along_height)
        dseq = torch.empty_like(seq)

        def backward_group(chunks_and_steps) -> tuple[torch.Tensor, ...]:
            # each group accumulates its own weight gradients (rows write disjoint dseq)
            d_w = (torch.zeros_like(w_x), seq.new_zeros(2, w_hh.shape[1]))
            d_h = (torch.zeros_like(w_hh), seq.new_zeros(2, w_hh.shape[2]))
            for rows, steps in zip(*chunks_and_steps):
                grads = (dseq[:, rows], d_w[0], d_w[1], d_h[0], d_h[1])
                _scan_rows_backward(seq[:, rows], d_scan[:, rows], w_x, w_hh, steps, grads)
            return (*d_w, *d_h)

        per_group = _map_groups(backward_group, list(zip(ctx.groups, ctx.steps)))
        d_wx, d_bx, d_whh, d_bhn = (sum(g[1:], g[0]) for g in zip(*per_group))
        return dseq, d_wx, d_bx, d_whh, d_bhn, None, None


def _row_chunks(b: int, length: int) -> list[slice]:
    """Batch slices of about ``SCAN_CHUNK_ROWS`` rows (B * L) each (whole images)."""
    per = max(1, SCAN_CHUNK_ROWS // length)
    return [slice(i, min(i + per, b)) for i in range(0, b, per)]


def _row_groups(b: int, length: int, groups: int) -> list[list[slice]]:
    """The batch's images split into ``groups`` near-equal runs, each in row chunks."""
    groups = max(1, min(groups, b))
    bounds = [b * i // groups for i in range(groups + 1)]
    return [
        [slice(lo + c.start, lo + c.stop) for c in _row_chunks(hi - lo, length)]
        for lo, hi in zip(bounds, bounds[1:])
    ]


# Row groups on threads. A GRU step's tensors are small ((2, 1024, 96) in a width block at
# batch 64), too small for torch's intra-op threads to pay: at 2 threads a block ran barely
# faster than at 1. The rows are independent sequences, so with torch.get_num_threads() = n > 1
# the batch's images are split into up to n groups of at least MIN_GROUP_IMAGES, each scanned
# by its own Python thread whose ops run single-threaded (torch releases the GIL inside each
# op). TSRN (16x64 inputs), 2 threads, whole model interleaved: batch 64 train forward +
# backward 1.11-1.32x, eval forward 1.11-1.39x; batch 128 train 1.32x, eval 0.98x; but batch
# 16 and 32 ran 0-20% slower (steps of tiny ops: the two threads probably mostly take
# turns holding the GIL), hence the minimum (docs/performance.md). The weight gradients are
# summed per group, then across groups in group order: deterministic for a given thread
# count and batch, equal to the one-thread sum up to float rounding.
MIN_GROUP_IMAGES = 32
_OPENMP = "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _parallel_groups(images: int) -> int:
    """How many row groups to scan at once for a CPU batch of ``images``: one per torch
    thread, each of at least MIN_GROUP_IMAGES images, or 1 where threads cannot or do not pay
    (on CUDA, always 1: one stream, and a CUDA graph captures only its own thread's work)."""
    groups = min(torch.get_num_threads(), images // MIN_GROUP_IMAGES)
    # the workers' single-threaded ops rely on OpenMP's per-thread setting; a dispatch mode
    # (FLOP counter, fake tensors) is per thread too and would not see the workers' ops
    if groups < 2 or not _OPENMP or dispatch_modes_active():
        return 1
    return groups


def dispatch_modes_active() -> bool:
    """Whether a TorchDispatchMode is active in this thread (assumed so if torch cannot say)."""
    depth = getattr(torch._C, "_len_torch_dispatch_stack", None)
    return depth is None or depth() > 0


def _map_groups(fn, groups: list) -> list:
    """``[fn(g) for g in groups]``, the groups on the worker threads when there are several,
    each worker in the calling thread's grad modes (``_caller_modes``)."""
    if len(groups) == 1:
        return [fn(groups[0])]
    enter_modes = _caller_modes()

    def as_caller(group):
        with enter_modes():
            return fn(group)

    # sized by the thread count, not the group count: batches of any width share it
    pool = _workers(max(len(groups), torch.get_num_threads()))
    return list(pool.map(as_caller, groups))


_AUTOCAST_DEVICES = ("cpu", "cuda")


def _caller_modes():
    """A context-manager factory that puts a worker thread in this thread's modes.

    Why: grad mode, inference mode and autocast are thread-local, and a worker starts in
    the defaults (grad on, no inference mode, no autocast). Under ``torch.inference_mode()``
    the output the workers write into is an inference tensor, and an in-place write to it
    outside inference mode raises (issue 27, point 12); autocast would cast the workers' ops
    differently from the calling thread's. So every group runs as it would have on the
    calling thread (tests/test_models_tsrn.py: each mode, 1 thread vs workers).
    """
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()
    autocast = [
        (device, torch.get_autocast_dtype(device))
        for device in _AUTOCAST_DEVICES
        if torch.is_autocast_enabled(device)
    ]
    cache = torch.is_autocast_cache_enabled()

    @contextlib.contextmanager
    def enter():
        with contextlib.ExitStack() as stack:
            # inference mode implies no grad; entering it off would turn grad mode on
            stack.enter_context(torch.inference_mode() if inference else contextlib.nullcontext())
            stack.enter_context(torch.set_grad_enabled(grad))
            for device, dtype in autocast:
                stack.enter_context(torch.autocast(device, dtype=dtype, cache_enabled=cache))
            yield

    return enter


def _single_threaded_pool(size: int) -> ThreadPoolExecutor:
    """``size`` threads whose torch ops run single-threaded (``map`` over fewer groups uses
    fewer of them), started before this returns."""
    threads = torch.get_num_threads()
    started = threading.Barrier(size + 1)

    def single_threaded() -> None:
        # torch sets a thread's OpenMP threads lazily, from the process default, on its
        # first parallel op: have that happen first, then set this thread's to 1
        torch.get_num_threads()
        torch.set_num_threads(1)
        started.wait()

    pool = ThreadPoolExecutor(size, "tsrx-gru-rows", initializer=single_threaded)
    for _ in range(size):  # while none is idle, each submit starts a thread
        pool.submit(int)
    started.wait()
    torch.set_num_threads(threads)  # it also set the process default: restore it
    return pool


_ROW_WORKERS = GrowingPool("tsrx-gru-rows", _single_threaded_pool)
_workers = _ROW_WORKERS.at_least


def _scan_rows(seq, out_scan, w_x_t, b_x, w_t, b_n, keep_for_backward: bool):
    """BiGruRecurrence's forward over the rows of ``seq`` (T, b, L, C) into ``out_scan``.

    Returns what backward needs per step s (both directions stacked): h, sigmoid(r|z), n
    and W_hn h + b_hn, in small tensors per step: the allocator reuses freed small blocks,
    where a fresh (T, ...) buffer costs a page fault per 4 KiB on its first write. Without a
    backward, one step's worth (two for h) is reused and nothing is returned. Views that do
    not change between steps are taken once (a view costs about a microsecond, a step of a
    width block a few hundred).
    """
    if not keep_for_backward and seq.dtype == torch.bfloat16 and seq.device.type == "cpu":
        native = gru_native.step_function()
        if native is not None and w_t.shape[1] % gru_native.VECTOR_WIDTH == 0:
            _scan_rows_native(native, seq, out_scan, w_x_t, b_x, w_t, b_n)
            return None
    t, b, length, c = seq.shape
    n, k = b * length, w_t.shape[1]
    x = seq.view(t, n, c).unbind(0)  # the rows are whole images
    out_fwd, out_rev = out_scan[..., :k].unbind(0), out_scan[..., k:].unbind(0)
    steps = t if keep_for_backward else 1
    hs = [seq.new_empty(2, n, k) for _ in range(t if keep_for_backward else 2)]
    h_images = [(h[0].view(b, length, k), h[1].view(b, length, k)) for h in hs]
    rz = [seq.new_empty(2, n, 2 * k) for _ in range(steps)]
    gates = [(a, a[..., :k], a[..., k:]) for a in rz]  # sigmoid(r|z), r, z
    ng = [seq.new_empty(2, 2, n, k).unbind(0) for _ in range(steps)]
    gx, g = seq.new_empty(2, n, 3 * k), seq.new_empty(2, n, 3 * k)
    (gx_fwd, gx_rev), gx_rz, gx_n = gx.unbind(0), gx[..., : 2 * k], gx[..., 2 * k :]
    g_rz, g_n = g[..., : 2 * k], g[..., 2 * k :]
    (w_fwd, w_rev), (b_fwd, b_rev) = w_x_t.unbind(0), b_x.unbind(0)
    minus_one = seq.new_full((), -1.0).expand(2, n, k)
    for s in range(t):
        j = s if keep_for_backward else 0
        (a, r, z), (c_n, gn) = gates[j], ng[j]
        i, i_prev = (s, s - 1) if keep_for_backward else (s % 2, (s - 1) % 2)
        h, h_prev = hs[i], hs[i_prev] if s else None
        torch.addmm(b_fwd, x[s], w_fwd, out=gx_fwd)
        torch.addmm(b_rev, x[t - 1 - s], w_rev, out=gx_rev)  # reverse: time backwards
        if s == 0:  # zero state: the hidden gates are their biases
            torch.sigmoid(gx_rz, out=a)
            gn.copy_(b_n.expand_as(gn))
        else:
            torch.bmm(h_prev, w_t, out=g)
            torch.add(gx_rz, g_rz, out=a).sigmoid_()
            torch.add(g_n, b_n, out=gn)
        # n = tanh(x_n + r (W_hn h + b_hn)), as 2 sigmoid(2u) - 1 (gx's n part is 2 x_n)
        torch.addcmul(gx_n, r, gn, value=2, out=c_n).sigmoid_()
        torch.add(minus_one, c_n, alpha=2, out=c_n)
        if s == 0:
            torch.mul(c_n, 1 - z, out=h)  # (1 - z) n + z 0
        else:
            torch.lerp(c_n, h_prev, z, out=h)  # (1 - z) n + z h
        out_fwd[s].copy_(h_images[i][0])
        out_rev[t - 1 - s].copy_(h_images[i][1])
    return (hs, rz, ng) if keep_for_backward else None


def _scan_rows_native(step, seq, out_scan, w_x_t, b_x, w_t, b_n) -> None:
    """``_scan_rows`` without a backward in bfloat16: per step the two input projections and
    the hidden product in torch, the gates, the new state and its two output writes in one
    native call (``gru_native``: the same math, in float32 inside, rounded once)."""
    t, b, length, c = seq.shape
    n, k = b * length, w_t.shape[1]
    x = seq.view(t, n, c).unbind(0)
    hs = [seq.new_empty(2, n, k) for _ in range(2)]
    gx, g = seq.new_empty(2, n, 3 * k), seq.new_empty(2, n, 3 * k)
    (gx_fwd, gx_rev), (w_fwd, w_rev), (b_fwd, b_rev) = gx.unbind(0), w_x_t.unbind(0), b_x.unbind(0)
    b_hn = b_n.reshape(2, k).contiguous()
    st, sb, sl, sc = out_scan.stride()
    if sc != 1 or out_scan.dtype != torch.bfloat16:
        raise ValueError("the native GRU step writes a bfloat16 output with unit channel stride")
    base, size = out_scan.data_ptr(), out_scan.element_size()
    for s in range(t):
        h, h_prev = hs[s % 2], hs[(s - 1) % 2]
        torch.addmm(b_fwd, x[s], w_fwd, out=gx_fwd)
        torch.addmm(b_rev, x[t - 1 - s], w_rev, out=gx_rev)  # reverse: time backwards
        if s:
            torch.bmm(h_prev, w_t, out=g)
        step(
            n,
            k,
            int(s == 0),
            gx.data_ptr(),
            g.data_ptr(),
            b_hn.data_ptr(),
            h_prev.data_ptr(),
            h.data_ptr(),
            base + s * st * size,
            base + ((t - 1 - s) * st + k) * size,
            length,
            sb,
            sl,
        )


def _scan_rows_backward(seq, d_scan, w_x, w_hh, steps, grads) -> None:
    """BiGruRecurrence's backward over the rows of one ``_scan_rows`` call: writes their
    input gradient into ``grads[0]``, adds the weights' and biases' into the others.

    The bias gradients are per-row sums of gate gradients: those are accumulated over the
    steps and summed over the rows once at the end.
    """
    hs, rz, ng = steps
    dseq, d_wx, d_bx, d_whh, d_bhn = grads
    t, b, length, c = seq.shape
    n, k = b * length, w_hh.shape[-1]
    x, dx_seq = seq.view(t, n, c).unbind(0), dseq.view(t, n, c).unbind(0)
    d_out_fwd, d_out_rev = d_scan[..., :k].unbind(0), d_scan[..., k:].unbind(0)
    dx = seq.new_empty(2, n, 3 * k)  # the input gates' gradient (r|z also the hidden ones)
    dgh = seq.new_empty(2, n, 3 * k)  # W_hh h + b_hh's gradient
    sum_dx, sum_dhn = seq.new_zeros(2, n, 3 * k), seq.new_zeros(2, n, k)
    dh = seq.new_zeros(2, n, k)
    dh_images = (dh[0].view(b, length, k), dh[1].view(b, length, k))
    slope, tanh_slope = seq.new_empty(2, n, 2 * k), seq.new_empty(2, n, k)
    one = seq.new_ones(()).expand(2, n, k)
    d_rz, d_n, d_hn = dgh[..., : 2 * k], dx[..., 2 * k :], dgh[..., 2 * k :]
    d_r, d_z, dx_rz, dgh_t = d_rz[..., :k], d_rz[..., k:], dx[..., : 2 * k], dgh.transpose(1, 2)
    (dx_fwd, dx_rev), (dx_fwd_t, dx_rev_t) = dx.unbind(0), dx.transpose(1, 2).unbind(0)
    (d_wx_fwd, d_wx_rev), (w_x_fwd, w_x_rev) = d_wx.unbind(0), w_x.unbind(0)
    for s in reversed(range(t)):
        a, (c_n, gn) = rz[s], ng[s]
        r, z = a[..., :k], a[..., k:]
        dh_images[0].add_(d_out_fwd[s])
        dh_images[1].add_(d_out_rev[t - 1 - s])
        # n: dh (1 - z) (1 - n^2); the hidden n gate's is that times r
        torch.addcmul(one, c_n, c_n, value=-1, out=tanh_slope)
        torch.addcmul(dh, dh, z, value=-1, out=d_n).mul_(tanh_slope)
        torch.mul(d_n, r, out=d_hn)
        # r: d_n (W_hn h + b_hn) r (1 - r); z: dh (h - n) z (1 - z)
        torch.mul(d_n, gn, out=d_r)
        if s:
            h_prev = hs[s - 1]
            torch.sub(h_prev, c_n, out=d_z)
        else:
            torch.neg(c_n, out=d_z)
        d_z.mul_(dh)
        d_rz.mul_(torch.addcmul(a, a, a, value=-1, out=slope))  # sigmoid' s (1 - s)
        dx_rz.copy_(d_rz)
        if s:
            d_whh.baddbmm_(dgh_t, h_prev)
        sum_dhn.add_(d_hn)
        sum_dx.add_(dx)
        d_wx_fwd.addmm_(dx_fwd_t, x[s])
        d_wx_rev.addmm_(dx_rev_t, x[t - 1 - s])
        # time i gets an input gradient from both directions (the forward one's step i, the
        # reverse one's step T-1-i): the later step, met first here, sets it, the other adds
        for dx_d, w_d, i, first in (
            (dx_fwd, w_x_fwd, s, s >= t - 1 - s),
            (dx_rev, w_x_rev, t - 1 - s, s > t - 1 - s),
        ):
            if first:
                torch.mm(dx_d, w_d, out=dx_seq[i])
            else:
                dx_seq[i].addmm_(dx_d, w_d)
        dh.mul_(z).baddbmm_(dgh, w_hh)
    d_bx.add_(sum_dx.sum(1))
    d_bhn.add_(sum_dhn.sum(1))
