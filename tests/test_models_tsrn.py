"""TSRN and the bicubic baseline: shapes, parameter counts, the official key layout and outputs."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from tsrx.checkpoint import detect_format, load_checkpoint, load_into, state_dict_for
from tsrx.errors import TsrxError
from tsrx.registry import SR_BACKBONES


def official_tsrn_keys(blocks: int = 5, hidden: int = 32, in_ch: int = 4) -> dict[str, tuple]:
    """The state_dict_G layout of TextZoom's TSRN(STN=True, mask=True), written out by hand
    from the official module tree (src/model/tsrn.py, recognizer/stn_head.py, tps_...py)."""
    c = 2 * hidden
    keys: dict[str, tuple] = {
        "block1.0.weight": (c, in_ch, 9, 9),
        "block1.0.bias": (c,),
        "block1.1.weight": (1,),
    }

    def bn(prefix: str, n: int) -> None:
        keys.update(
            {
                f"{prefix}.weight": (n,),
                f"{prefix}.bias": (n,),
                f"{prefix}.running_mean": (n,),
                f"{prefix}.running_var": (n,),
                f"{prefix}.num_batches_tracked": (),
            }
        )

    def gru(prefix: str) -> None:
        keys.update({f"{prefix}.conv1.weight": (c, c, 1, 1), f"{prefix}.conv1.bias": (c,)})
        for sfx in ("", "_reverse"):
            keys.update(
                {
                    f"{prefix}.gru.weight_ih_l0{sfx}": (3 * c // 2, c),
                    f"{prefix}.gru.weight_hh_l0{sfx}": (3 * c // 2, c // 2),
                    f"{prefix}.gru.bias_ih_l0{sfx}": (3 * c // 2,),
                    f"{prefix}.gru.bias_hh_l0{sfx}": (3 * c // 2,),
                }
            )

    for i in range(2, blocks + 2):
        b = f"block{i}"
        keys.update({f"{b}.conv1.weight": (c, c, 3, 3), f"{b}.conv1.bias": (c,)})
        bn(f"{b}.bn1", c)
        gru(f"{b}.gru1")
        keys.update({f"{b}.conv2.weight": (c, c, 3, 3), f"{b}.conv2.bias": (c,)})
        bn(f"{b}.bn2", c)
        gru(f"{b}.gru2")
    keys.update({f"block{blocks + 2}.0.weight": (c, c, 3, 3), f"block{blocks + 2}.0.bias": (c,)})
    bn(f"block{blocks + 2}.1", c)
    keys.update(
        {
            f"block{blocks + 3}.0.conv.weight": (4 * c, c, 3, 3),
            f"block{blocks + 3}.0.conv.bias": (4 * c,),
            f"block{blocks + 3}.1.weight": (in_ch, c, 9, 9),
            f"block{blocks + 3}.1.bias": (in_ch,),
        }
    )
    keys.update(
        {
            "tps.inverse_kernel": (23, 23),
            "tps.padding_matrix": (3, 2),
            "tps.target_coordinate_repr": (16 * 64, 23),
            "tps.target_control_points": (20, 2),
        }
    )
    widths = [in_ch, 32, 64, 128, 256, 256, 256]
    for j in range(6):
        p = f"stn_head.stn_convnet.{2 * j}"
        keys.update(
            {f"{p}.0.weight": (widths[j + 1], widths[j], 3, 3), f"{p}.0.bias": (widths[j + 1],)}
        )
        bn(f"{p}.1", widths[j + 1])
    keys.update({"stn_head.stn_fc1.0.weight": (512, 512), "stn_head.stn_fc1.0.bias": (512,)})
    bn("stn_head.stn_fc1.1", 512)
    keys.update({"stn_head.stn_fc2.weight": (40, 512), "stn_head.stn_fc2.bias": (40,)})
    return keys


def random_state(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in layout.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.1
    return out


def tsrn(**options):
    return SR_BACKBONES.build({"type": "tsrn", **options}, "model.sr")


def test_default_tsrn_has_the_official_parameter_count_and_keys():
    model = tsrn()
    assert model.in_channels == 4
    assert sum(p.numel() for p in model.parameters()) == 2_681_677
    assert sum(p.numel() for p in tsrn(stn=False).parameters()) == 826_629
    layout = official_tsrn_keys()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == layout


@pytest.mark.parametrize(
    "options,channels",
    [
        ({}, 4),
        ({"mask": False}, 3),
        ({"upsample_stages": 2}, 4),
        ({"blocks": 2, "hidden_units": 16, "stn": False}, 4),
    ],
)
def test_tsrn_maps_lr_to_hr_size_in_train_and_eval(options, channels):
    model = tsrn(**options)
    lr = torch.rand(2, channels, 16, 64)
    assert model.train()(lr).shape == (2, channels, 32, 128)
    assert model.eval()(lr).shape == (2, channels, 32, 128)


def test_stn_runs_in_training_only():
    torch.manual_seed(0)
    model = tsrn(blocks=1, hidden_units=8)
    lr = torch.rand(2, 4, 16, 64)
    calls = []
    model.stn_head.register_forward_hook(lambda *a: calls.append(1))
    model.eval()(lr)
    assert calls == []
    model.train()(lr)
    assert calls == [1]


def _reference_gru_block(block, x: torch.Tensor, along_height: bool) -> torch.Tensor:
    """The official computation order: 1x1 conv on NCHW, rows (or columns) as a batch of
    batch-first sequences, back to NCHW."""
    if along_height:
        x = x.transpose(-1, -2)
    x = F.conv2d(x, block.conv1.weight, block.conv1.bias)
    b, c, h, w = x.shape
    seq = x.permute(0, 2, 3, 1).reshape(b * h, w, c)
    out = block.gru(seq.transpose(0, 1))[0].transpose(0, 1)  # batch-first semantics
    out = out.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return out.transpose(-1, -2) if along_height else out


def _reference_forward(model, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode TSRN forward written the official way (no STN in eval)."""
    head = model.block1(x)
    y = head
    for i in range(2, model.blocks + 2):
        rrb = getattr(model, f"block{i}")
        r = rrb.bn2(rrb.conv2(F.mish(rrb.bn1(rrb.conv1(y)))))
        r = _reference_gru_block(rrb.gru1, r, along_height=True)
        y = _reference_gru_block(rrb.gru2, y + r, along_height=False)
    y = getattr(model, f"block{model.blocks + 2}")(y)
    return torch.tanh(getattr(model, f"block{model.blocks + 3}")(head + y))


def test_official_checkpoint_loads_without_leftovers_and_gives_official_outputs(tmp_path):
    path = tmp_path / "model_best.pth"
    torch.save(
        {
            "state_dict_G": random_state(official_tsrn_keys()),
            "info": {"arch": "tsrn", "iters": 1000, "epochs": 3},
            "best_history_res": {"easy": 0.5},
            "param_num": 2681677,
            "converge": [{"iter": 1, "acc": 0.1}],
        },
        path,
    )
    obj = load_checkpoint(path)
    assert detect_format(obj) == "textzoom"
    state = state_dict_for(obj, "sr")
    assert all(k.startswith("sr.") for k in state)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sr = tsrn()

    holder = Holder()
    report = load_into(holder, state)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert len(report.loaded) == len(official_tsrn_keys())
    model = holder.sr.eval()
    lr = torch.rand(2, 4, 16, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(lr), _reference_forward(model, lr), atol=1e-4, rtol=1e-4)


def test_tsrn_kaiming_init_changes_body_but_keeps_stn_identity_start():
    torch.manual_seed(0)
    model = tsrn(init="kaiming")
    fc2 = model.stn_head.stn_fc2
    assert torch.count_nonzero(fc2.weight) == 0
    assert fc2.bias.view(20, 2)[0].tolist() == pytest.approx([0.01, 0.01])
    assert model.block2.gru1.gru.bias_ih_l0.abs().sum() == 0


@pytest.mark.parametrize("init", ["default", "kaiming"])
def test_bicubic_residual_tsrn_starts_at_bicubic_then_learns_a_correction(init):
    torch.manual_seed(0)
    model = tsrn(blocks=1, hidden_units=8, stn=False, residual="bicubic", init=init)
    assert set(model.state_dict()) == set(tsrn(blocks=1, hidden_units=8, stn=False).state_dict())
    lr = torch.rand(2, 4, 16, 64)
    bicubic = F.interpolate(lr, (32, 128), mode="bicubic", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(lr), bicubic, atol=0, rtol=0)
    model.train()
    loss = (model(lr) - torch.rand(2, 4, 32, 128)).square().mean()
    loss.backward()
    assert model.block4[-1].weight.grad.abs().sum() > 0  # the zero-started conv learns
    with torch.no_grad():
        model.block4[-1].weight.add_(0.01)
        assert (model.eval()(lr) - bicubic).abs().max() > 0


def test_bicubic_has_no_parameters_and_keeps_channels():
    model = SR_BACKBONES.build({"type": "bicubic"}, "model.sr")
    lr = torch.rand(2, 4, 16, 64)
    out = model(lr)
    assert list(model.parameters()) == [] and model.in_channels == 4
    assert out.shape == (2, 4, 32, 128)
    torch.testing.assert_close(
        out, F.interpolate(lr, (32, 128), mode="bicubic", align_corners=False)
    )
    with pytest.raises(TsrxError, match="4-channel"):
        model(torch.rand(2, 3, 16, 64))


# The speed arrangements of plugins/tsrn.py (docs/performance.md) against the plain math, in
# float64 so that only a real difference in the computation could fail them.


def _assert_scan_equals_nn_gru(block, x: torch.Tensor) -> torch.Tensor:
    """The block's scan against its plain path (1x1 conv, then ``nn.GRU`` over the scanned
    axis: what cuDNN runs) in output (with and without autograd) and every gradient; returns
    the scan's output."""
    plain_x, fast_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain, fast = block._nn_gru(plain_x), block._scan(fast_x)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(block._scan(x), plain, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(plain)
    plain_grads = torch.autograd.grad((plain * weights).sum(), [plain_x, *block.parameters()])
    fast_grads = torch.autograd.grad((fast * weights).sum(), [fast_x, *block.parameters()])
    for got, want in zip(fast_grads, plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    return fast


@pytest.mark.parametrize("along_height", [True, False])
@pytest.mark.parametrize("kind", ["tsrn", "text_prior"])
def test_gru_block_recurrence_equals_nn_gru_in_output_and_gradients(along_height, kind):
    from tsrx_builtin import text_prior, tsrn

    torch.manual_seed(0)
    if kind == "tsrn":  # NHWC activations, in = out channels
        block = tsrn.GruBlock(8, along_height=along_height).double()
        x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
        x = x.contiguous(memory_format=torch.channels_last)
    else:  # TPGSR / TATT: NCHW, in != out (the column GRU reads residual + prior map)
        block = text_prior.GruBlock(12, 8, along_height=along_height).double()
        x = torch.randn(2, 12, 3, 5, dtype=torch.float64)
    fast = _assert_scan_equals_nn_gru(block, x)
    assert fast.shape == (2, 8, 3, 5)
    assert fast.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("along_height", [True, False])
def test_gru_block_recurrence_in_row_chunks_equals_nn_gru(along_height, monkeypatch):
    from tsrx_builtin import gru_scan, tsrn

    # 6 rows a chunk: 3 images of width 5 go one per chunk, of height 3 as 2 + 1
    monkeypatch.setattr(gru_scan, "SCAN_CHUNK_ROWS", 6)
    torch.manual_seed(0)
    block = tsrn.GruBlock(8, along_height=along_height).double()
    x = torch.randn(3, 8, 3, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    assert len(gru_scan._row_chunks(3, 5 if along_height else 3)) > 1
    _assert_scan_equals_nn_gru(block, x)


@pytest.mark.parametrize("along_height", [True, False])
def test_gru_block_recurrence_on_worker_threads_equals_nn_gru(along_height, monkeypatch):
    from tsrx_builtin import gru_scan, tsrn

    # 3 row groups on 3 worker threads (whatever this machine's thread count), 2 row chunks
    # in the first: each group accumulates its own weight gradients, summed at the end
    monkeypatch.setattr(gru_scan, "_parallel_groups", lambda images: 3)
    monkeypatch.setattr(gru_scan, "SCAN_CHUNK_ROWS", 6)
    assert [len(g) for g in gru_scan._row_groups(5, 5, 3)] == [1, 2, 2]
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    block = tsrn.GruBlock(8, along_height=along_height).double()
    x = torch.randn(5, 8, 3, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    _assert_scan_equals_nn_gru(block, x)
    # the workers ran their ops single-threaded without changing this thread's setting
    assert torch.get_num_threads() == threads
    if gru_scan._OPENMP:
        assert gru_scan._workers(3).submit(torch.get_num_threads).result() == 1
    # fewer groups (a narrower batch) reuse the pool instead of making one of their size
    pool = gru_scan._ROW_WORKERS.current
    monkeypatch.setattr(gru_scan, "_parallel_groups", lambda images: 2)
    with torch.no_grad():
        block._scan(x)
    assert gru_scan._ROW_WORKERS.current is pool


# Issue 27, point 12: grad mode, inference mode and autocast are thread-local; the scan's
# worker threads must run in the caller's, whatever the thread count
GRAD_MODES = {
    "inference_mode": torch.inference_mode,
    "no_grad": torch.no_grad,
    "enable_grad": torch.enable_grad,
    "autocast_bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    "inference_mode_autocast_bf16": lambda: _both(
        torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16)
    ),
}


@contextlib.contextmanager
def _both(a, b):
    with a, b:
        yield


def _run_in_mode(model, x, mode: str):
    """The model's output (and, where a graph is recorded, every parameter's gradient)."""
    model.zero_grad(set_to_none=True)
    with GRAD_MODES[mode]():
        out = model(x)
        if out.requires_grad:
            out.float().square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return out.float().clone(), grads


@pytest.mark.parametrize("mode", sorted(GRAD_MODES))
def test_every_grad_mode_runs_the_gru_scan_workers_as_one_thread(mode, monkeypatch):
    from tsrx_builtin import gru_scan

    if not gru_scan._OPENMP:
        pytest.skip("the row groups run on threads only with OpenMP")
    torch.manual_seed(0)
    model = tsrn(blocks=1, hidden_units=4)
    x = torch.rand(6, 4, 16, 64)
    threads = torch.get_num_threads()
    try:
        # 2 threads either way (bf16 convolutions round differently at another count)
        torch.set_num_threads(2)
        monkeypatch.setattr(gru_scan, "MIN_GROUP_IMAGES", 10**9)  # one group, this thread
        want = _run_in_mode(model, x, mode)
        monkeypatch.setattr(gru_scan, "MIN_GROUP_IMAGES", 1)  # a row group per worker thread
        entered = []
        caller_modes = gru_scan._caller_modes
        monkeypatch.setattr(gru_scan, "_caller_modes", lambda: entered.append(1) or caller_modes())
        got = _run_in_mode(model, x, mode)
    finally:
        torch.set_num_threads(threads)
    assert entered, "the row groups did not run on worker threads"
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert (
        len(got[1])
        == len(want[1])
        == (len(list(model.parameters())) if mode in ("enable_grad", "autocast_bf16") else 0)
    )
    for g, w in zip(*(got[1], want[1])):
        if "autocast" in mode:
            # the bf16 recurrence sums each row group's weight gradients in bf16: another
            # grouping rounds them differently (bf16 keeps 8 bits), so compare as a whole
            assert (g - w).norm() <= 3e-2 * w.norm(), (g - w).norm() / w.norm()
        else:
            # float32 sums of terms in the hundreds in another grouping: an element that
            # cancels to near zero differs by the terms' rounding, not its own (on a Zen CPU
            # one of 64 such elements was 7e-5 off), so compare to the tensor's norm (seen:
            # at most 2.6e-6 of it)
            assert (g - w).norm() <= 2e-5 * w.norm(), (g - w).norm() / w.norm()


def test_inference_mode_runs_tsrn_at_two_threads_and_batch_64():
    # the probe: a loaded TSRN, then `with torch.inference_mode(): m(x)` at 2 threads and
    # batch 64 (two row groups of 32 images) raised "Inplace update to inference tensor
    # outside InferenceMode" in the workers
    torch.manual_seed(0)
    model = tsrn(blocks=1, hidden_units=4).eval()
    x = torch.rand(64, 4, 16, 64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with torch.inference_mode():
            got = model(x)
        with torch.no_grad():
            want = model(x)
    finally:
        torch.set_num_threads(threads)
    assert got.is_inference()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_gru_scan_uses_worker_threads_where_they_can_and_pay(monkeypatch):
    from bench.common import flop_counter
    from tsrx_builtin import gru_scan

    monkeypatch.setattr(gru_scan, "_OPENMP", True)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert gru_scan._parallel_groups(64) == 2
    assert gru_scan._parallel_groups(63) == 1  # groups under 32 images ran slower
    assert gru_scan._parallel_groups(16) == 1
    with flop_counter():  # a dispatch mode sees only its own thread's ops
        assert gru_scan._parallel_groups(64) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert gru_scan._parallel_groups(100) == 3
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert gru_scan._parallel_groups(256) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(gru_scan, "_OPENMP", False)  # per-thread op threads need OpenMP
    assert gru_scan._parallel_groups(256) == 1


def test_gru_scan_keeps_non_cpu_tensors_on_the_calling_thread(monkeypatch):
    from tsrx_builtin import gru_scan

    # CUDA: one stream, and a CUDA graph captures only its own thread's work; "meta" stands
    # in for any device that is not the CPU
    def no_workers(size):
        raise AssertionError("worker threads used for a non-CPU tensor")

    monkeypatch.setattr(gru_scan, "_parallel_groups", lambda images: 2)
    monkeypatch.setattr(gru_scan, "_workers", no_workers)
    t, b, length, c, k = 3, 4, 5, 8, 2
    shapes = ((t, b, length, c), (2, 3 * k, c), (2, 3 * k), (2, 3 * k, k), (2, k))
    inputs = [torch.empty(shape, device="meta") for shape in shapes]
    with torch.no_grad():
        out = gru_scan.BiGruRecurrence.apply(*inputs, True, False)
    assert out.shape == (b, t, length, 2 * k) and out.device.type == "meta"


@pytest.mark.parametrize("t", [1, 3])
def test_bigru_recurrence_passes_gradcheck(t):
    from tsrx_builtin.gru_scan import BiGruRecurrence

    torch.manual_seed(0)
    b, length, c, k = 2, 2, 4, 2
    inputs = [
        torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        for shape in ((t, b, length, c), (2, 3 * k, c), (2, 3 * k), (2, 3 * k, k), (2, k))
    ]
    for along_height in (True, False):
        run = lambda *a, along_height=along_height: BiGruRecurrence.apply(*a, along_height, True)  # noqa: E731
        assert torch.autograd.gradcheck(run, inputs)


@pytest.mark.parametrize("along_height", [True, False])
def test_gru_block_recurrence_at_real_size_in_float32_matches_nn_gru(along_height):
    from tsrx_builtin.tsrn import GruBlock

    torch.manual_seed(0)
    block = GruBlock(64, along_height=along_height)
    x = torch.randn(4, 64, 16, 64).contiguous(memory_format=torch.channels_last)
    plain_x, fast_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain, fast = block._nn_gru(plain_x), block._scan(fast_x)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the eval path keeps one step's buffers; same result
        torch.testing.assert_close(block._scan(x), plain, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(plain)
    plain_grads = torch.autograd.grad((plain * weights).sum(), [plain_x, *block.parameters()])
    fast_grads = torch.autograd.grad((fast * weights).sum(), [fast_x, *block.parameters()])
    for got, want in zip(fast_grads, plain_grads):  # sums over 4096 positions: scaled atol
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_chunked_mish_equals_f_mish_in_value_gradient_and_memory_format(layout, monkeypatch):
    from tsrx_builtin import mish as mish_module

    monkeypatch.setattr(mish_module, "CHUNK", 1000)  # several chunks and a short last one
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, 11, dtype=torch.float64) * 8
    x[0, 0, 0, :5] = torch.tensor([30.0, 20.0, 0.0, -50.0, -800.0])  # clamp, zero, underflow
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # neither layout: F.mish does it
        x = x.transpose(1, 2)
    plain_x, fast_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain, fast = F.mish(plain_x), mish_module.mish(fast_x)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-14)
    assert fast.stride() == plain.stride()
    g = torch.randn_like(plain)
    (want,) = torch.autograd.grad(plain, plain_x, g)
    (got,) = torch.autograd.grad(fast, fast_x, g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    assert torch.isfinite(got).all()


def test_chunked_mish_in_float32_matches_float64_as_closely_as_f_mish():
    from tsrx_builtin.mish import mish

    torch.manual_seed(0)
    x = (torch.randn(4, 8, 16, 64) * 4).contiguous(memory_format=torch.channels_last)
    exact = F.mish(x.double())
    fast, plain = mish(x), F.mish(x)
    assert (fast.double() - exact).abs().max() <= 2 * (plain.double() - exact).abs().max()
    leaf = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(mish(leaf).sum(), leaf, create_graph=True)
    with pytest.raises(RuntimeError):  # once differentiable: no silent wrong double backward
        g.sum().backward()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_mish_in_half_precision_computes_in_float32_and_rounds_once(dtype, monkeypatch):
    from tsrx_builtin import mish as mish_module

    monkeypatch.setattr(mish_module, "CHUNK", 1000)  # several chunks and a short last one
    torch.manual_seed(0)
    x64 = (torch.randn(3, 5, 7, 11, dtype=torch.float64) * 8).contiguous(
        memory_format=torch.channels_last
    )
    x64[0, 0, 0, :5] = torch.tensor([30.0, 20.0, 0.0, -50.0, -800.0])
    x = x64.to(dtype).requires_grad_()
    y = mish_module.mish(x)
    assert y.dtype == dtype and y.stride() == F.mish(x.detach()).stride()
    # the float32 result rounded once: what F.mish of the half input would give at best
    torch.testing.assert_close(y, F.mish(x.detach().float()).to(dtype), rtol=0, atol=0)
    g = torch.randn_like(x64).to(dtype)
    (got,) = torch.autograd.grad(y, x, g)
    leaf = x.detach().float().requires_grad_()
    (want,) = torch.autograd.grad(F.mish(leaf), leaf, g.float())
    assert got.dtype == dtype
    torch.testing.assert_close(got, want.to(dtype), rtol=0, atol=0)


def test_low_res_weight_makes_conv_before_the_pixel_shuffle_equal_conv_after_it():
    from tsrx_builtin.tsrn import _low_res_weight

    torch.manual_seed(0)
    w = torch.randn(3, 2, 9, 9, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64)
    u = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    plain = F.conv2d(F.pixel_shuffle(u, 2), w, b, padding=4)
    fast = F.pixel_shuffle(F.conv2d(u, _low_res_weight(w), b.repeat_interleave(4), padding=2), 2)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(plain)
    torch.testing.assert_close(
        torch.autograd.grad((fast * g).sum(), w)[0],
        torch.autograd.grad((plain * g).sum(), w)[0],
        rtol=1e-10,
        atol=1e-12,
    )


def test_tsrn_tail_equals_its_layers_applied_in_order():
    torch.manual_seed(0)
    model = SR_BACKBONES.build({"type": "tsrn", "blocks": 1, "hidden_units": 4}, "model.sr")
    model = model.double().eval()
    x = torch.rand(2, 4, 16, 64, dtype=torch.float64)
    head = model.block1(x)
    plain = torch.tanh(model.block4(head + model.block3(model.block2(head))))
    torch.testing.assert_close(model(x), plain, rtol=1e-10, atol=1e-12)


def test_recurrence_option_picks_the_gru_path_and_keeps_the_math(monkeypatch):
    from tsrx_builtin.tsrn import GruBlock

    calls = []
    for name in ("_scan", "_nn_gru"):
        original = getattr(GruBlock, name)
        monkeypatch.setattr(
            GruBlock, name, lambda self, x, o=original, n=name: calls.append(n) or o(self, x)
        )
    torch.manual_seed(0)
    outputs = {}
    for recurrence in ("auto", "scan", "nn.GRU"):
        model = SR_BACKBONES.build(
            {"type": "tsrn", "blocks": 1, "recurrence": recurrence}, "model.sr"
        ).double()
        if outputs:
            model.load_state_dict(next(iter(outputs.values()))[0].state_dict())
        calls.clear()
        x = torch.rand(2, 4, 16, 64, dtype=torch.float64)
        outputs[recurrence] = (model, model.eval()(torch.ones_like(x)), set(calls))
    # on CPU "auto" is the scan; "nn.GRU" is torch's module; all give the same image
    assert outputs["auto"][2] == {"_scan"} and outputs["scan"][2] == {"_scan"}
    assert outputs["nn.GRU"][2] == {"_nn_gru"}
    torch.testing.assert_close(outputs["nn.GRU"][1], outputs["scan"][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("along_height", [True, False])
def test_gru_scan_runs_in_bf16_under_bf16_autocast_close_to_float32(along_height):
    # precision = "bf16": the recurrence itself runs in bfloat16 (faster, docs/performance.md);
    # its output and every gradient stay within a few bf16 roundings of the float32 scan's
    from tsrx_builtin.tsrn import GruBlock

    torch.manual_seed(0)
    block = GruBlock(64, along_height=along_height)
    x = torch.randn(4, 64, 16, 64).contiguous(memory_format=torch.channels_last)
    runs = []
    for bf16 in (False, True):
        block.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = block._scan(xi)
        out.float().square().sum().backward()
        runs.append((out, [p.grad for p in block.parameters()] + [xi.grad]))
    (want, want_grads), (got, got_grads) = runs
    assert want.dtype == torch.float32 and got.dtype == torch.bfloat16
    # |out| < 1 here; bf16 keeps 8 bits (a rounding step of 2^-8 near 1)
    assert (got.float() - want).abs().max() < 2e-2
    assert (got.float() - want).norm() < 1e-2 * want.norm()
    assert all(g.dtype == torch.float32 for g in got_grads)  # the parameters stay float32
    for g, w in zip(got_grads, want_grads):
        assert (g - w).norm() < 2e-2 * w.norm()


def test_tsrn_runs_under_cpu_bf16_autocast_close_to_float32():
    # train.precision = "bf16" on a CPU: the whole model, GRU recurrence included, in bf16
    torch.manual_seed(0)
    model = SR_BACKBONES.build({"type": "tsrn", "blocks": 1}, "model.sr")
    x = torch.rand(2, 4, 16, 64)
    with torch.no_grad():
        want = model.eval()(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
    assert (got.float() - want).abs().mean() < 0.02  # bf16 rounding, not another function
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.train()(x).float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
