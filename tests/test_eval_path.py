"""One way from a file to a number: every command opens a checkpoint with
tsrx.engine.loading.open_checkpoint and evaluates with evaluate_config; shared options
(--device, --judge) mean the same in every command; an optional write never costs a
requested one; a judge that cannot read HR images is called out."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_engine_helpers import prepare, tiny_data, tiny_plugin, write_experiment  # noqa: F401
from torch import nn
from typer.testing import CliRunner

from tsrx.errors import TsrxError


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_data, tiny_plugin):
    """A run directory holding a checkpoint of the tiny SR model, and a meijieru-style
    crnn.pth (random weights: plumbing, not accuracy)."""
    from tsrx.checkpoint import make_checkpoint, save_checkpoint
    from tsrx.config.experiment import load_experiment
    from tsrx.models.build import build_model
    from tsrx.plugins import load_named_plugins
    from tsrx.registry import RECOGNIZERS

    tmp = tmp_path_factory.mktemp("evalpath")
    load_named_plugins([str(tiny_plugin)], ".", where="test")
    experiment = write_experiment(tmp / "exp", tiny_data, tiny_plugin, "ro")
    config = load_experiment(experiment).runs[0].config
    torch.manual_seed(0)
    model = build_model(config)
    run_dir = prepare(experiment, tmp / "runs")
    ckpt = save_checkpoint(
        run_dir / "last.pth", make_checkpoint(model.state_dict(), config=config, step=8)
    )
    crnn = tmp / "crnn.pth"
    torch.save(RECOGNIZERS.get("crnn")().state_dict(), crnn)
    return {"tmp": tmp, "ckpt": ckpt, "run_dir": run_dir, "crnn": crnn, "data": tiny_data}


def _invoke(args, cwd, monkeypatch):
    from tsrx.cli.main import app

    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, [str(a) for a in args])


# -- issue 27, point 4: a read-only run directory --------------------------------------------
def test_read_only_run_dir_still_writes_the_requested_json(files, monkeypatch):
    """`tsrx eval --ckpt RO/last.pth --json out.json`: the result cache under RO/eval/ cannot
    be written (EROFS); the table, out.json and a one-line warning, exit 0."""
    from tsrx.engine import result_cache as cache

    def read_only(run_dir, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(run_dir / "eval"))

    monkeypatch.setattr(cache, "store", read_only)
    out = files["tmp"] / "out.json"
    res = _invoke(["eval", "--ckpt", files["ckpt"], "--json", out], files["tmp"], monkeypatch)
    assert res.exit_code == 0, res.output
    assert "easy" in res.output and "protocol textzoom" in res.output
    assert json.loads(out.read_text())["average"]["psnr"] is not None
    assert res.output.count("Read-only file system") == 1
    assert "not cached" in res.output and "Traceback" not in res.output


# -- issue 24: one meaning per option ----------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["eval", "--ckpt", "{ckpt}", "--recognizer", "{crnn}"],
        ["sr", "{data}", "--ckpt", "{ckpt}", "-o", "out", "--recognizer", "{crnn}"],
        ["viz", "samples", "--ckpt", "{ckpt}", "--recognizer", "{crnn}"],
        ["ckpt", "compose", "--sr", "{ckpt}", "-o", "c.pth", "--judge", "{crnn}"],
    ],
    ids=["eval --recognizer", "sr --recognizer", "viz --recognizer", "compose --judge PATH"],
)
def test_old_spellings_are_refused_with_the_new_one(files, monkeypatch, args):
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    res = _invoke(args, files["tmp"], monkeypatch)
    assert res.exit_code != 0
    assert isinstance(res.exception, TsrxError), res.output
    assert f"--judge crnn={files['crnn']}" in str(res.exception)


def test_device_auto_is_the_one_rule():
    from tsrx.engine.loading import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(TsrxError, match="expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(TsrxError, match="CUDA is not available"):
            resolve_device("cuda")


def test_every_command_defaults_to_device_auto():
    import inspect

    from tsrx.cli import ckpt_cmd, eval_cmd, report_cmd, sr_cmd, train_cmd, viz_cmd

    commands = [
        eval_cmd.eval_command,
        sr_cmd.sr,
        viz_cmd.samples,
        report_cmd.report,
        train_cmd.train,
        ckpt_cmd.compose_cmd,
    ]
    for command in commands:
        option = inspect.signature(command).parameters["device"].default
        assert option.default == "auto", command.__name__


# -- the one loading path ----------------------------------------------------------------------
def test_report_eval_missing_refuses_missing_weights_like_eval(files, tmp_path):
    """`report --eval-missing` opens a run's checkpoint as `tsrx eval` does: a checkpoint that
    lacks weights of the run's model is an error, never a randomly initialised layer."""
    from tsrx.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
    from tsrx.report.collect import read_run
    from tsrx.report.evaluate import evaluate_checkpoint

    obj = load_checkpoint(files["ckpt"])
    state = dict(obj["model"])
    state.pop(next(iter(state)))
    holed = save_checkpoint(tmp_path / "holed.pth", make_checkpoint(state, config=obj["config"]))
    run = read_run(files["run_dir"])
    with pytest.raises(TsrxError, match="weight\\(s\\) missing"):
        evaluate_checkpoint(run, holed, device="cpu")
    result = evaluate_checkpoint(run, files["ckpt"], device="cpu")
    assert set(result["splits"]) == {"easy", "medium", "hard"}


def test_sr_reads_an_official_textzoom_file(tmp_path):
    """`tsrx sr` opens what `tsrx eval` opens: the official TSRN file, not only tsrx ones."""
    from tsrx.cli.sr_cmd import super_resolve
    from tsrx.models.build import build_parts

    official = build_parts({"sr": {"type": "tsrn"}})["sr"]
    torch.save({"state_dict_G": official.state_dict(), "info": {"arch": "tsrn"}}, tmp_path / "t")
    crops = tmp_path / "crops"
    crops.mkdir()
    Image.fromarray(np.full((20, 70, 3), 200, np.uint8)).save(crops / "a.png")
    rows = super_resolve(tmp_path / "t", [crops], tmp_path / "out", device="cpu")
    assert Image.open(rows[0]["output"]).size == (128, 32)


@pytest.mark.parametrize("arch", ["tatt", "tsrn_tl_cascade"])
def test_load_model_of_an_official_text_prior_file_is_its_backbone(tmp_path, arch):
    """An official TPGSR / TATT file holds the SR network only: load_model gives that
    backbone, ``forward(x, prior)``, where it used to refuse for want of a prior generator."""
    import tsrx
    from tsrx.registry import SR_BACKBONES

    torch.manual_seed(0)
    official = SR_BACKBONES.build({"type": arch}, "model.sr").eval()
    state = official.state_dict()
    torch.save({"state_dict_G": state, "info": {"arch": arch}}, tmp_path / "official.pth")
    sr = tsrx.load_model(tmp_path / "official.pth")
    assert type(sr) is type(official) and not sr.training
    for k, v in state.items():
        assert torch.equal(sr.state_dict()[k], v), k
    lr = torch.rand(1, 4, 16, 64)
    prior = torch.softmax(torch.randn(1, 37, 1, 26), dim=1)
    with torch.no_grad():
        got, want = sr(lr, prior), official(lr, prior)
    got, want = (got[0], want[0]) if isinstance(got, tuple) else (got, want)
    assert torch.equal(got, want)


# -- issue 26: a judge that cannot read ----------------------------------------------------------
class _Blind(nn.Module):
    """A recognizer whose weights read nothing: every crop is 'zzz'."""

    def recognize(self, images):
        from types import SimpleNamespace

        return SimpleNamespace(texts=["zzz"] * len(images))


class _Reader(nn.Module):
    """A recognizer that reads every crop right (it knows the label of each HR image)."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def recognize(self, images):
        from types import SimpleNamespace

        keys = images.flatten(1)[:, 0].mul(255).round().long().tolist()
        return SimpleNamespace(texts=[self.labels[k] for k in keys])


class _Upsample(nn.Module):
    def forward(self, batch):
        lr = batch["lr"][:, :3]
        return {"sr": nn.functional.interpolate(lr, scale_factor=2.0, mode="nearest")}


def _split(n):
    items = []
    for i in range(n):
        hr = torch.zeros(3, 32, 128, dtype=torch.uint8)
        hr[0, 0, 0] = i  # the reader's key
        lr = torch.zeros(4, 16, 64, dtype=torch.uint8)
        items.append({"lr": lr, "hr": hr, "label": f"word{i}", "index": i})
    return items


@pytest.mark.parametrize("baselines", [False, True])
def test_a_judge_that_cannot_read_hr_is_called_out(baselines):
    from tsrx.engine.evaluator import evaluate_model
    from tsrx.engine.judges import Judge
    from tsrx.engine.result_view import result_caption

    data = {"easy": _split(24)}
    blind = Judge("crnn", "crnn (weights/crnn.pth)", _Blind())
    reader = Judge("good", "good", _Reader({i: f"word{i}" for i in range(24)}))
    result = evaluate_model(
        _Upsample(),
        data,
        batch_size=8,
        device="cpu",
        judges=[blind, reader],
        baselines=baselines,
        with_predictions=False,
    )
    caption = "\n".join(result_caption(result))
    assert "judge crnn (crnn (weights/crnn.pth)) reads only 0.00 of 24 HR images" in caption
    for cause in ("wrong weights", "vocabulary", "input convention"):
        assert cause in caption
    assert "judge good" not in caption  # it reads HR: no warning
    # the warning is the judge's: a second evaluation (the next validation) repeats it
    again = evaluate_model(
        _Upsample(), data, batch_size=8, device="cpu", judges=[blind], with_predictions=False
    )
    assert any("judge crnn" in n for n in again["notes"])


def test_too_few_hr_images_say_nothing_about_a_judge():
    from tsrx.engine.evaluator import evaluate_model
    from tsrx.engine.judges import Judge

    result = evaluate_model(
        _Upsample(),
        {"easy": _split(6)},
        batch_size=4,
        device="cpu",
        judges=[Judge("crnn", "crnn", _Blind())],
        with_predictions=False,
    )
    assert not any("judge crnn" in n for n in result.get("notes") or [])


# -- issue 26: preprocessing for load_model users -------------------------------------------------
def test_prepare_lr_is_what_the_data_pipeline_gives(tmp_path, tiny_data):
    """tsrx.prepare_lr on a TextZoom LR crop = the dataset's LR tensor (same resize and mask)."""
    import tsrx
    from tsrx.data.samples import read_raw
    from tsrx.data.textzoom import TextZoomDataset
    from tsrx.data.transforms import decode_image, to_float

    ds = TextZoomDataset(
        root=str(tiny_data),
        roots=["test/easy"],
        hr_size=(32, 128),
        lr_size=(16, 64),
        mask=True,
        voc_type="all",
        max_len=100,
        skip_bad=False,
        cache=False,
    )
    _, lr_bytes = read_raw(ds.splits[0].db, ds.lmdb_index(0)[1])[1:]
    raw = decode_image(lr_bytes)  # the LR crop as stored, at its own size
    x = tsrx.prepare_lr([lr_bytes], (16, 64), mask=True)
    assert x.shape == (1, 4, 16, 64) and x.dtype == torch.float32
    assert torch.equal(x[0], to_float(ds[0]["lr"]))
    path = tmp_path / "crop.png"
    raw.save(path)
    both = tsrx.prepare_lr([path, np.asarray(raw)], (16, 64), mask=False)
    assert both.shape == (2, 3, 16, 64) and torch.equal(both[0], both[1])
    with pytest.raises(TsrxError, match="image 0: expected a Pillow image"):
        tsrx.prepare_lr([42])
    with pytest.raises(TsrxError, match="image 1: .*missing.png"):
        tsrx.prepare_lr([path, tmp_path / "missing.png"])


def test_viz_samples_of_an_official_textzoom_file(tmp_path, tiny_data):
    """`tsrx viz samples --ckpt tsrn.pth --data ROOT`: an official file's config names no test
    splits, so TextZoom's test/{easy,medium,hard} under --data are drawn."""
    from tsrx.models.build import build_parts
    from tsrx.viz.samples import samples_sheet

    official = build_parts({"sr": {"type": "tsrn"}})["sr"]
    torch.save({"state_dict_G": official.state_dict(), "info": {"arch": "tsrn"}}, tmp_path / "t")
    path, sections = samples_sheet(tmp_path / "t", tiny_data, tmp_path / "s.png", n=1)
    assert list(sections) == ["easy", "medium", "hard"] and path.is_file()
    assert sections["easy"][0].reads["sr"] is None  # no reader: pictures without readings
