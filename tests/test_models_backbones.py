"""The field's SR backbones against their official code: keys, parameter counts, outputs.

Evidence recorded by tests/fixtures/backbones/record_backbones.py, which ran the official
TextZoom (srcnn ... esrgan) and Scene-Text-Telescope (tbsrn) code outside this repository
on weights drawn by tests/seeded_weights.py from a seed and the official key/shape list.
Here the same weights are drawn for the tsrx model, packed as the official code saves them
(TextZoom layout, DataParallel ``module.`` prefixes), read through tsrx's official-format
reader and loaded in one shot: no key may be missing or left over, and the outputs on the
recorded TextZoom-format inputs must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from seeded_weights import layout, seeded_state

from tsrx.checkpoint import load_into, read_official, state_dict_for
from tsrx.errors import TsrxError
from tsrx.registry import SR_BACKBONES

FIXTURES = Path(__file__).parent / "fixtures" / "backbones"
CASES = sorted(p.stem for p in FIXTURES.glob("*.pt"))
BIG = {"edsr", "esrgan"}  # 40.7 M and 16.7 M parameters: a few seconds each on one core


def record(case: str) -> dict:
    return torch.load(FIXTURES / f"{case}.pt", weights_only=True)


def official_checkpoint(rec: dict, constants: dict) -> dict:
    """What the official code's save_checkpoint writes (its model is DataParallel-wrapped)."""
    state = seeded_state(rec["layout"], rec["seed"], constants)
    return {
        "state_dict_G": OrderedDict((f"module.{k}", v) for k, v in state.items()),
        "info": {
            "arch": rec["arch"],
            "iters": 1000,
            "epochs": 1,
            "batch_size": 512,
            "voc_type": "all",
            "up_scale_factor": 2,
        },
    }


def test_every_official_arch_has_a_record():
    assert {record(c)["arch"] for c in CASES} == {
        "srcnn",
        "vdsr",
        "srres",
        "edsr",
        "rdn",
        "lapsrn",
        "esrgan",
        "tbsrn",
    }


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in BIG else c for c in CASES]
)
def test_official_checkpoint_loads_and_reproduces_official_output(case):
    rec = record(case)
    # the architecture and options come from the file alone, as for `tsrx eval --ckpt`
    probe = official_checkpoint(
        rec, {k: torch.zeros(0) for k, *_, kind in rec["layout"] if kind == "constant"}
    )
    official = read_official(probe)
    table = official.model["sr"]
    assert table["type"] == rec["arch"]
    assert {k: v for k, v in table.items() if k in rec["options"]} == rec["options"]
    options = {k: v for k, v in table.items() if k != "type"}
    model = SR_BACKBONES.get(rec["arch"])(**options)
    assert model.in_channels == rec["lr"].shape[1]

    # same keys and shapes as the official module tree, and the same parameter count
    ours = {k: (tuple(s), d, kind) for k, s, d, kind in layout(model)}
    theirs = {k: (tuple(s), d, kind) for k, s, d, kind in rec["layout"]}
    assert ours == theirs
    assert sum(p.numel() for p in model.parameters()) == rec["parameters"]
    own = model.state_dict()
    for key, (total, absolute) in rec["constants"].items():  # fixed buffers (TPS tables)
        assert float(own[key].double().sum()) == pytest.approx(total, rel=1e-5, abs=1e-5)
        assert float(own[key].double().abs().sum()) == pytest.approx(absolute, rel=1e-5)

    constants = {k: v for k, v in own.items() if k in rec["constants"]}
    state = state_dict_for(official_checkpoint(rec, constants), "sr")
    holder = torch.nn.Module()
    holder.sr = model
    report = load_into(holder, state, source=case)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert not report.tolerated
    model.eval()
    with torch.no_grad():
        sr = model(rec["lr"])
    expected = rec["sr"]
    scale = float(expected.abs().max())
    torch.testing.assert_close(sr, expected, rtol=1e-4, atol=1e-5 * max(1.0, scale))
    if "stn" in rec:  # the training-time TPS alignment (TBSRN's STN head reads the 16x64 LR)
        with torch.no_grad():
            points = model.stn_head(rec["lr"])
            aligned = model.tps(rec["lr"], points)
        torch.testing.assert_close(points, rec["stn_points"], rtol=1e-4, atol=1e-6)
        # a float32 LAPACK inverse and grid_sample, both the CPU's kernels: one of 6,144 values
        # moves by 3e-5 on this machine
        torch.testing.assert_close(aligned, rec["stn"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "arch",
    ["srcnn", "vdsr", "srres", "rdn", "lapsrn", pytest.param("tbsrn", marks=pytest.mark.slow)],
)
def test_training_forward_and_backward(arch):
    """Each trains: training mode (STN on for TBSRN) gives the HR size and a nonzero gradient."""
    model = SR_BACKBONES.get(arch)().train()
    lr = torch.rand(2, model.in_channels, 16, 64)
    sr = model(lr)
    assert sr.shape == (2, model.in_channels, 32, 128)
    sr.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_mask_and_stn_are_read_off_the_weights():
    rec = record("srres_mask")
    state = seeded_state(rec["layout"], rec["seed"], {})
    found = read_official({"state_dict_G": state, "info": {"arch": "srres"}})
    assert found.model == {"sr": {"type": "srres", "mask": True}}
    tbsrn = SR_BACKBONES.get("tbsrn")(stn=False)
    found = read_official({"state_dict_G": tbsrn.state_dict(), "info": {"arch": "tbsrn"}})
    assert found.model == {"sr": {"type": "tbsrn", "mask": False, "stn": False}}


def test_unknown_arch_lists_the_known_ones_and_how_to_name_one():
    with pytest.raises(TsrxError) as err:
        read_official({"state_dict_G": {"w": torch.zeros(1)}, "info": {"arch": "tsrn_plus"}})
    message = str(err.value)
    for name in ("srcnn", "vdsr", "srres", "edsr", "rdn", "lapsrn", "esrgan", "tbsrn", "tsrn"):
        assert name in message
    assert "'tsrn_plus'" in message and "[model.sr]" in message


def test_shape_mismatch_names_the_key_and_both_shapes():
    """An x4 LapSRN-style or 4-channel file into a 3-channel model: the key and both shapes."""
    model = torch.nn.Module()
    model.sr = SR_BACKBONES.get("rdn")()
    state = {f"sr.{k}": v for k, v in model.sr.state_dict().items()}
    state["sr.conv_up.weight"] = torch.zeros(1024, 64, 3, 3)  # x4 upsampler (64 * 4 * 4)
    with pytest.raises(
        TsrxError,
        match=r"sr\.conv_up\.weight: checkpoint \(1024, 64, 3, 3\), "
        r"model \(256, 64, 3, 3\)",
    ):
        load_into(model, state)


def test_a_broken_input_conv_is_named():
    with pytest.raises(TsrxError, match=r"conv1\.weight has shape \(64, 5, 9, 9\)"):
        read_official(
            {"state_dict_G": {"conv1.weight": torch.zeros(64, 5, 9, 9)}, "info": {"arch": "srcnn"}}
        )


def test_tbsrn_needs_32_hidden_units():
    with pytest.raises(TsrxError, match="hidden_units = 16"):
        SR_BACKBONES.get("tbsrn")(hidden_units=16)


def _tsrx(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tsrx", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_inspect_names_the_architecture_and_its_exact_parameter_count(tmp_path):
    model = SR_BACKBONES.get("tbsrn")()
    torch.save(
        {
            "state_dict_G": {f"module.{k}": v for k, v in model.state_dict().items()},
            "info": {"arch": "tbsrn", "iters": 5},
        },
        tmp_path / "tbsrn.pth",
    )
    out = _tsrx("ckpt", "inspect", "tbsrn.pth", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "model.sr: type=tbsrn, mask=False, stn=True" in out.stdout
    assert "3,210,335" in out.stdout and "built here" in out.stdout


def test_eval_of_an_official_rgb_checkpoint_reads_rgb_data(tmp_path):
    """An official 3-channel backbone: tsrx eval feeds it 3-channel images (data.mask follows)."""
    from tsrx.data.synth import synthesize

    synthesize(tmp_path / "synth", train=2, train2=0, test=[2, 2, 2], seed=0, fonts="builtin")
    torch.save(
        {"state_dict_G": SR_BACKBONES.get("srcnn")().state_dict(), "info": {"arch": "srcnn"}},
        tmp_path / "srcnn.pth",
    )
    out = _tsrx("eval", "--ckpt", "srcnn.pth", "--data", "synth", "--json", "r.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["splits"]["easy"]["n"] == 2 and result["splits"]["easy"]["psnr"] > 0
