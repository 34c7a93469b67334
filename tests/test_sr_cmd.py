"""`tsrx sr` on arbitrary crops: protocol resize, PNGs of the model's HR size, readings."""

from __future__ import annotations

import numpy as np
import pytest
import typer
from PIL import Image, ImageDraw
from test_viz_fixtures import joint_ckpt, sr_only_ckpt, synth_root  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from tsrx.errors import TsrxError


def _app():
    from tsrx.cli import sr_cmd

    app = typer.Typer()
    app.callback()(lambda: None)  # a group, as in tsrx: `sr` stays a sub-command name
    sr_cmd.register(app)
    return app


def _crops(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("wide", (300, 60)), ("tiny", (23, 9)), ("square", (40, 40))):
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        ImageDraw.Draw(img).text((2, 0), "TEXT", fill=(255, 255, 255))
        img.save(folder / f"{name}.png" if name != "square" else folder / f"{name}.jpg")
    (folder / "notes.txt").write_text("not an image, ignored in a folder")
    return folder


def test_sr_writes_hr_sized_pngs_exactly_as_bicubic(tmp_path, sr_only_ckpt):
    import torch
    import torch.nn.functional as F

    from tsrx.data.transforms import preprocess

    crops = _crops(tmp_path / "crops")
    res = CliRunner().invoke(
        _app(), ["sr", str(crops), "--ckpt", str(sr_only_ckpt), "-o", str(tmp_path / "out")]
    )
    assert res.exit_code == 0, res.output
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == ["square.png", "tiny.png", "wide.png"]
    for name in outs:
        assert Image.open(tmp_path / "out" / name).size == (128, 32)
    # the bicubic plugin: SR = bicubic x2 of the protocol's 16x64 LR (mask channel dropped)
    src = Image.open(crops / "wide.png").convert("RGB")
    lr = torch.from_numpy(preprocess(src, (16, 64), True)).float().div(255)[None]
    want = F.interpolate(lr, (32, 128), mode="bicubic", align_corners=False)[0, :3]
    want = want.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "wide.png")), want)


def test_sr_recognize_prints_before_and_after(tmp_path, joint_ckpt):
    crops = _crops(tmp_path / "crops")
    res = CliRunner().invoke(
        _app(),
        [
            "sr",
            str(crops / "wide.png"),
            str(crops / "tiny.png"),
            "--ckpt",
            str(joint_ckpt),
            "-o",
            str(tmp_path / "out"),
            "--recognize",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "before" in res.output and "after" in res.output
    assert "wide.png" in res.output and "tiny.png" in res.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 2


def test_sr_errors_name_the_problem(tmp_path, sr_only_ckpt):
    import torch

    crops = _crops(tmp_path / "crops")
    from tsrx.cli.sr_cmd import super_resolve

    with pytest.raises(TsrxError, match="--recognize.*no recognizer"):
        super_resolve(sr_only_ckpt, [crops], tmp_path / "o", recognize=True)
    with pytest.raises(TsrxError, match="notes.txt: cannot decode image"):
        super_resolve(sr_only_ckpt, [crops / "notes.txt"], tmp_path / "o")
    with pytest.raises(TsrxError, match="missing.png: no such image or folder"):
        super_resolve(sr_only_ckpt, [crops / "missing.png"], tmp_path / "o")
    bare = tmp_path / "bare.pth"
    torch.save({"w": torch.zeros(1)}, bare)
    with pytest.raises(TsrxError, match="does not say which model it holds"):
        super_resolve(bare, [crops], tmp_path / "o")
