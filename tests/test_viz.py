"""`tsrx viz curves` and `tsrx viz samples` write PNGs of the expected size and content."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from test_viz_fixtures import joint_ckpt, sr_only_ckpt, synth_root  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from tsrx.errors import TsrxError
from tsrx.report.collect import read_run
from tsrx.viz.curves import plot_curves, series_of
from tsrx.viz.sheets import GREEN, HEADER_H, LABEL_W, MARGIN, RED, Sample, contact_sheet, sheet_size


def _metrics_run(folder, combiner="uncertainty", steps=(10, 20, 30)):
    folder.mkdir(parents=True)
    (folder / "status.json").write_text(json.dumps({"state": "completed", "step": steps[-1]}))
    lines = [{"kind": "run", "step": 0, "tasks": ["sr", "recognition"]}]
    for s in steps:
        comb = {"type": combiner}
        if combiner == "uncertainty":
            comb.update(
                {"s_sr": -0.01 * s, "sigma_sr": 1 - 0.01 * s, "sigma_recognition": 1 + 0.01 * s}
            )
        lines.append(
            {
                "kind": "train",
                "step": s,
                "loss": 3.0 / s,
                "terms": {"sr": 1.0 / s, "recognition": 2.0 / s},
                "lr": 1e-3,
                "samples_per_s": 100.0,
                "combiner": comb,
            }
        )
    for s in steps[1:]:
        lines.append(
            {
                "kind": "val",
                "step": s,
                "result": {
                    "splits": {
                        sp: {
                            "n": 3,
                            "acc": 0.1 * s / 10,
                            "psnr": 20 + s / 10,
                            "ssim": 0.5 + s / 100,
                        }
                        for sp in ("easy", "medium", "hard")
                    }
                },
            }
        )
    text = (
        "\n".join(json.dumps(x) for x in lines) + "\n" + '{"kind": "train", "st'
    )  # torn last line
    (folder / "metrics.jsonl").write_text(text)
    return folder


def test_series_reads_terms_sigma_and_validation(tmp_path):
    s = series_of(read_run(_metrics_run(tmp_path / "a")))
    assert s.loss["total"] == ([10, 20, 30], [0.3, 0.15, 0.1])
    assert set(s.loss) == {"total", "sr", "recognition"}
    assert set(s.weights) == {"sigma_sr", "sigma_recognition"}
    assert s.val["psnr"]["hard"] == ([20, 30], [22.0, 23.0])


@pytest.mark.slow
def test_curves_png_for_one_and_several_runs(tmp_path):
    a = read_run(_metrics_run(tmp_path / "a"))
    b = read_run(_metrics_run(tmp_path / "b", combiner="avg", steps=(10, 20)))
    for runs, name in (([a], "one.png"), ([a, b], "two.png")):
        out = plot_curves(runs, tmp_path / name)
        with Image.open(out) as img:
            assert img.format == "PNG" and img.size == (1500, 800)
            assert (
                len(set(np.asarray(img.convert("L")).ravel().tolist())) > 20
            )  # something was drawn


def test_curves_cli_and_errors(tmp_path):
    from tsrx.cli.viz_cmd import app

    run = _metrics_run(tmp_path / "a")
    res = CliRunner().invoke(app, ["curves", str(run), "-o", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "c.png").size == (1500, 800)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "status.json").write_text('{"state": "running", "step": 0}')
    with pytest.raises(TsrxError, match="no training or validation lines"):
        plot_curves([read_run(empty)], tmp_path / "x.png")
    res = CliRunner().invoke(app, ["curves", str(tmp_path / "nowhere")])
    assert isinstance(res.exception, TsrxError) and "not a run directory" in str(res.exception)


def test_curves_without_matplotlib_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(TsrxError, match=r"pip install 'tsrx\[plots\]'"):
        plot_curves([read_run(_metrics_run(tmp_path / "a"))], tmp_path / "c.png")


def _sample(i, lr_ok, sr_ok):
    pics = {
        k: np.full((32, 128, 3), v, np.uint8) for k, v in (("lr", 50), ("sr", 120), ("hr", 200))
    }
    return Sample(
        i,
        "word",
        pics,
        {"lr": "w", "sr": "word", "hr": "word"},
        {"lr": lr_ok, "sr": sr_ok, "hr": True},
    )


def test_contact_sheet_size_and_marks():
    sections = [
        ("easy", [_sample(1, False, True), _sample(2, True, False)]),
        ("hard", [_sample(3, True, True)]),
    ]
    assert [s.verdict for s in sections[0][1]] + [sections[1][1][0].verdict] == [
        "fixed",
        "broke",
        None,
    ]
    img = contact_sheet(sections, (32, 128), scale=2)
    assert (
        img.size
        == sheet_size([2, 1])
        == (
            2 * MARGIN + LABEL_W + 3 * (256 + 8),
            MARGIN + 2 * (2 * HEADER_H) + 3 * (64 + 14 + 8) + MARGIN,
        )
    )
    a = np.asarray(img)
    sr_x = MARGIN + LABEL_W + 256 + 8
    y0 = MARGIN + 2 * HEADER_H
    assert tuple(a[y0 + 10, sr_x - 2]) == GREEN  # frame of the first (fixed) SR tile
    assert tuple(a[y0 + 64 + 14 + 8 + 10, sr_x - 2]) == RED  # the second one broke
    assert tuple(a[y0 + 10, sr_x + 10]) == (120, 120, 120)  # the SR picture itself


@pytest.mark.slow
def test_viz_samples_cli(tmp_path, joint_ckpt, synth_root):
    from tsrx.cli.viz_cmd import app

    out = tmp_path / "sheet.png"
    res = CliRunner().invoke(
        app,
        [
            "samples",
            "--ckpt",
            str(joint_ckpt),
            "--data",
            str(synth_root),
            "-n",
            "2",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "easy: 2 samples" in res.output and "SR fixed" in res.output
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == sheet_size([2, 2, 2])
    res = CliRunner().invoke(
        app,
        [
            "samples",
            "--ckpt",
            str(joint_ckpt),
            "--data",
            str(synth_root),
            "-n",
            "5",
            "--split",
            "hard",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == sheet_size([3])  # the split only has 3 images


def test_viz_samples_without_reader_still_draws(tmp_path, sr_only_ckpt, synth_root):
    from tsrx.viz.samples import samples_sheet

    path, sections = samples_sheet(
        sr_only_ckpt, synth_root, tmp_path / "s.png", n=1, splits=["easy"]
    )
    assert sections["easy"][0].reads["sr"] is None and sections["easy"][0].verdict is None
    assert Image.open(path).size == sheet_size([1])
    with pytest.raises(TsrxError, match="--split 'test'.*easy, medium, hard"):
        samples_sheet(sr_only_ckpt, synth_root, tmp_path / "s.png", splits=["test"])


def test_viz_module_does_not_import_torch():
    import subprocess

    code = "import sys, tsrx.cli.viz_cmd, tsrx.cli.sr_cmd; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
