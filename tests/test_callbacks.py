"""Training callbacks (issue 26): the registry and its contract, the EMA and picture plugins,
exact resume with callback state, and the user's plugin example of docs/engine.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, weights, write_experiment  # noqa: F401

from tsrx.config.experiment import load_experiment
from tsrx.contracts import ContractError
from tsrx.engine.callbacks import Callback
from tsrx.errors import ConfigError, TsrxError
from tsrx.registry import CALLBACKS

REPO = Path(__file__).resolve().parents[1]
SETS = ["train.steps=6", "train.val_every=2", "train.ckpt_every=2", "model.sr.dropout=0.2"]
EMA = '\n[[train.callbacks]]\ntype = "ema"\ndecay = {decay}\n'
PICTURES = '\n[[train.callbacks]]\ntype = "val_pictures"\nsamples = 4\n'


class Recorder(Callback):
    """Records the SR weights after every step and the weights each validation read."""

    def __init__(self):
        self.after: list[dict] = []
        self.evaluated: dict[int, dict] = {}

    def after_step(self, trainer, out):
        self.after.append({k: v.clone() for k, v in trainer.model.sr.state_dict().items()})

    def on_validation(self, trainer, result):
        self.evaluated[trainer.step] = {
            k: v.clone() for k, v in trainer.model.sr.state_dict().items()
        }


@pytest.fixture
def recorder():
    made = []

    def make():
        made.append(Recorder())
        return made[-1]

    CALLBACKS.register("test_recorder", make)
    yield made
    CALLBACKS.unregister("test_recorder")


def _train(run_dir):
    from tsrx.engine.run import run_training

    return run_training(run_dir, device="cpu")


def _run(tmp_path, tiny_data, tiny_plugin, extra, sets=(), name="tiny"):
    exp = write_experiment(tmp_path / name, tiny_data, tiny_plugin, "tiny", extra)
    run_dir = prepare(exp, tmp_path / name / "runs", [*SETS, *sets])
    return run_dir, _train(run_dir)


# -- the registry and its contract ----------------------------------------------------------
def test_contract_names_a_misspelt_hook_and_other_breaches():
    class Misspelt(Callback):
        def on_valdiation(self, trainer, result):
            pass

    class NoHook:
        pass

    class BadSignature:
        def after_step(self, trainer):
            pass

    class HalfState(Callback):
        def state_dict(self):
            return {}

    cases = {
        Misspelt: "on_valdiation: not a hook, so tsrx would never call it; the hooks are setup",
        NoHook: "it defines none of the hooks",
        BadSignature: r"after_step\(trainer\) cannot be called as after_step\(trainer, out\)",
        HalfState: "state_dict and load_state_dict go together",
    }
    for cls, message in cases.items():
        CALLBACKS.register("test_bad", cls)
        try:
            with pytest.raises(ContractError, match=message):
                CALLBACKS.build({"type": "test_bad"}, "train.callbacks[0]")
        finally:
            CALLBACKS.unregister("test_bad")


def test_config_checks_callback_tables(tmp_path, tiny_data, tiny_plugin):
    bad = write_experiment(
        tmp_path,
        tiny_data,
        tiny_plugin,
        extra='\n[[train.callbacks]]\ntype = "emma"\n\n[[train.callbacks]]\ntype = "ema"\n'
        "decay = 1.5\n",
    )
    with pytest.raises(ConfigError) as err:
        load_experiment(bad)
    text = str(err.value)
    assert "train.callbacks[0].type" in text and "unknown callback 'emma'" in text
    assert "did you mean 'ema'" in text
    assert "train.callbacks[1].decay" in text
    good = write_experiment(tmp_path, tiny_data, tiny_plugin, "good", EMA.format(decay=0.9))
    (run,) = load_experiment(good).runs
    assert run.config["train"]["callbacks"] == [
        {"type": "ema", "decay": 0.9, "part": "sr", "evaluate": True, "save": True}
    ]


# -- EMA ------------------------------------------------------------------------------------
def test_ema_averages_evaluates_and_saves_the_averaged_weights(
    tmp_path, tiny_data, tiny_plugin, recorder
):
    decay = 0.5
    extra = '\n[[train.callbacks]]\ntype = "test_recorder"\n' + EMA.format(decay=decay)
    run_dir, result = _run(tmp_path, tiny_data, tiny_plugin, extra, name="ema")
    assert result["state"] == "completed"
    rec = recorder[0]
    # the average, computed here from the initial weights and those after each step
    avg, params = _initial(run_dir)
    expected = {}
    for step, w in enumerate(rec.after, start=1):
        for k, v in w.items():
            avg[k] = avg[k] * decay + v * (1 - decay) if k in params else v.clone()
        expected[step] = {k: v.clone() for k, v in avg.items()}
    saved = weights(run_dir / "ema_model.pth")
    for k, v in expected[6].items():
        torch.testing.assert_close(saved[f"sr.{k}"], v, rtol=1e-6, atol=1e-7)
    # the recorder comes first, so its on_validation sees the EMA's evaluation weights too:
    # the contexts nest in config order and on_validation runs inside all of them
    for step in (2, 4, 6):
        for k, v in expected[step].items():
            torch.testing.assert_close(rec.evaluated[step][k], v, rtol=1e-6, atol=1e-7)
    best = weights(run_dir / "best_psnr_model.pth")
    best_step = json.loads((run_dir / "summary.json").read_text())["best"]["best_psnr"]["step"]
    for k, v in expected[best_step].items():
        torch.testing.assert_close(best[f"sr.{k}"], v, rtol=1e-6, atol=1e-7)
    # training reads the raw weights: last.pth holds them, not the average
    raw = weights(run_dir / "last.pth")
    assert all(torch.equal(raw[f"sr.{k}"], v) for k, v in rec.after[-1].items())
    ckpt = torch.load(run_dir / "last.pth", weights_only=True)
    assert list(ckpt["callbacks"]) == ["1.ema"]
    assert metrics(run_dir, "run")[0]["callbacks"] == ["0.test_recorder", "1.ema"]


def _initial(run_dir):
    """The SR weights a fresh build of the run starts from (seeded, as the trainer builds),
    and its parameter names."""
    from tsrx.engine.build import build_run
    from tsrx.engine.distributed import DistEnv
    from tsrx.engine.run import load_run_config

    sr = build_run(load_run_config(run_dir), DistEnv(), torch.device("cpu")).model.sr
    return {k: v.clone() for k, v in sr.state_dict().items()}, dict(sr.named_parameters())


def test_ema_leaves_the_training_trajectory_bit_identical(tmp_path, tiny_data, tiny_plugin):
    plain, _ = _run(tmp_path, tiny_data, tiny_plugin, "", name="plain")
    ema, _ = _run(tmp_path, tiny_data, tiny_plugin, EMA.format(decay=0.9) + PICTURES, name="ema")
    a, b = weights(plain / "last.pth"), weights(ema / "last.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ta, tb = metrics(plain, "train"), metrics(ema, "train")
    assert [m["loss"] for m in ta] == [m["loss"] for m in tb]


def test_stopped_and_resumed_run_with_callbacks_is_bit_identical(
    tmp_path, tiny_data, tiny_plugin, monkeypatch
):
    extra = EMA.format(decay=0.7) + PICTURES
    straight, _ = _run(tmp_path, tiny_data, tiny_plugin, extra, name="straight")
    monkeypatch.setenv("TINY_STOP_AT", "3")
    resumed, first = _run(tmp_path, tiny_data, tiny_plugin, extra, name="resumed")
    assert first["state"] == "preempted" and first["step"] == 3
    monkeypatch.delenv("TINY_STOP_AT")
    assert _train(resumed)["state"] == "completed"
    for name in ("last.pth", "ema_model.pth", "best_psnr_model.pth"):
        a, b = weights(straight / name), weights(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    sa = torch.load(straight / "last.pth", weights_only=True)["callbacks"]["0.ema"]["average"]
    sb = torch.load(resumed / "last.pth", weights_only=True)["callbacks"]["0.ema"]["average"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert metrics(straight, "val") == metrics(resumed, "val")
    pictures = sorted(p.name for p in (resumed / "pictures").iterdir())
    assert pictures == ["val_step0000002.png", "val_step0000004.png", "val_step0000006.png"]
    for name in pictures:
        pa = Image.open(straight / "pictures" / name)
        pb = Image.open(resumed / "pictures" / name)
        assert pa.tobytes() == pb.tobytes(), name


def test_ema_of_a_missing_part_is_named(tmp_path, tiny_data, tiny_plugin):
    extra = '\n[[train.callbacks]]\ntype = "ema"\npart = "recognizer"\n'
    with pytest.raises(TsrxError, match="ema part = 'recognizer': the model has no such part"):
        _run(tmp_path, tiny_data, tiny_plugin, extra, name="nopart")


# -- validation pictures ----------------------------------------------------------------------
def test_val_pictures_writes_one_sheet_per_validation(tmp_path, tiny_data, tiny_plugin):
    from tsrx.viz.sheets import sheet_size

    run_dir, _ = _run(tmp_path, tiny_data, tiny_plugin, PICTURES, name="pics")
    files = sorted((run_dir / "pictures").iterdir())
    assert [f.name for f in files] == [
        "val_step0000002.png",
        "val_step0000004.png",
        "val_step0000006.png",
    ]
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.size == sheet_size([4])
    # different weights at each validation: different SR columns
    assert Image.open(files[0]).tobytes() != Image.open(files[-1]).tobytes()
    bad = PICTURES + 'split = "hardest"\n'
    with pytest.raises(TsrxError, match="split = 'hardest' is not a validation split"):
        _run(tmp_path, tiny_data, tiny_plugin, bad, name="badsplit")
    # refused when the run is built, before the first step
    status = json.loads(
        (tmp_path / "badsplit" / "runs" / "tiny" / "main" / "status.json").read_text()
    )
    assert status["state"] == "failed" and status["step"] == 0


# -- the docs' user plugin ------------------------------------------------------------------
def docs_example() -> tuple[str, str]:
    text = (REPO / "docs" / "engine.md").read_text()
    section = text.split("## Training callbacks", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n# my_callbacks.py\n(.*?)```", section, flags=re.S).group(1)
    toml = re.search(r"```toml\n(.*?)```", section, flags=re.S).group(1)
    return python, toml


def test_docs_callback_plugin_example_runs_and_resumes(tmp_path, tiny_data, tiny_plugin, caplog):
    python, toml = docs_example()
    (tmp_path / "my_callbacks.py").write_text(python)
    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, "docs", "\n" + toml)
    text = exp.read_text().replace(
        f'plugins = ["{tiny_plugin}"]', f'plugins = ["{tiny_plugin}", "my_callbacks.py"]'
    )
    toml_plugins = re.search(r"^plugins = .*$", toml, flags=re.M)
    if toml_plugins:  # the example's own plugins line is merged into the file's
        text = text.replace(toml_plugins.group(0), "")
    exp.write_text(text)
    try:
        run_dir = prepare(exp, tmp_path / "runs", SETS)
        with caplog.at_level("INFO", logger="tsrx"):
            assert _train(run_dir)["state"] == "completed"
        ckpt = torch.load(run_dir / "last.pth", weights_only=True)
        keys = list(ckpt["callbacks"])
        assert keys == ["0.ema", "2.loss_spikes"]
        assert set(ckpt["callbacks"]["2.loss_spikes"]) == {"mean", "spikes"}
        assert "loss spike(s) in 6 steps" in caplog.text
        assert len(list((run_dir / "pictures").iterdir())) == 3
        assert (run_dir / "ema_model.pth").is_file()
    finally:
        CALLBACKS.unregister("loss_spikes")


@pytest.mark.slow
def test_callbacks_under_two_ranks_resume_bit_identical(
    tmp_path, tiny_data, tiny_plugin, monkeypatch
):
    """2 gloo ranks: every rank averages and swaps (validation is sharded), rank 0 alone writes
    ema_model.pth and the pictures; a run stopped at step 3 and resumed ends as the straight
    one."""
    from tsrx.cli.train_cmd import train_run_dir

    extra = EMA.format(decay=0.7) + PICTURES
    runs = {}
    for name in ("straight", "resumed"):
        exp = write_experiment(tmp_path / name, tiny_data, tiny_plugin, "tiny", extra)
        runs[name] = prepare(exp, tmp_path / name / "runs", SETS)
    assert train_run_dir(runs["straight"], 2, "cpu") == "completed"
    monkeypatch.setenv("TINY_STOP_AT", "3")
    assert train_run_dir(runs["resumed"], 2, "cpu") == "preempted"
    monkeypatch.delenv("TINY_STOP_AT")
    assert train_run_dir(runs["resumed"], 2, "cpu") == "completed"
    straight, resumed = runs["straight"], runs["resumed"]
    for name in ("last.pth", "ema_model.pth", "best_psnr_model.pth"):
        a, b = weights(straight / name), weights(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert metrics(straight, "val") == metrics(resumed, "val")
    names = sorted(p.name for p in (resumed / "pictures").iterdir())
    assert names == ["val_step0000002.png", "val_step0000004.png", "val_step0000006.png"]
    for name in names:
        a = Image.open(straight / "pictures" / name).tobytes()
        assert a == Image.open(resumed / "pictures" / name).tobytes(), name


def test_force_moves_the_callbacks_files_aside(tmp_path, tiny_data, tiny_plugin):
    """--force starts the run afresh: an old ema_model.pth or old pictures must not sit beside
    the new run's files as if it had written them."""
    run_dir, _ = _run(tmp_path, tiny_data, tiny_plugin, EMA.format(decay=0.9) + PICTURES)
    exp = tmp_path / "tiny" / "tiny.toml"
    (run,) = load_experiment(exp, [*SETS, "train.steps=4"]).runs
    from tsrx.launch.rundir import prepare_run_dir

    assert prepare_run_dir(run, tmp_path / "tiny" / "runs", force=True, command=["t"]) == run_dir
    assert not (run_dir / "ema_model.pth").exists() and not (run_dir / "pictures").exists()
    (old,) = (run_dir / "superseded").iterdir()
    assert (old / "ema_model.pth").is_file() and len(list((old / "pictures").iterdir())) == 3
