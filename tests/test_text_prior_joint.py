"""Text-prior coupling (TPGSR, TATT): config checks, the joint forward, the TP loss against the
official code, a few training steps with evaluation, and `tsrx eval` of an official file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_engine_helpers import metrics, prepare, tiny_data, weights  # noqa: F401

from tsrx.errors import ConfigError, TsrxError

FIXTURES = Path(__file__).parent / "fixtures" / "text_prior"
SMALL_TPGSR = '{ type = "tsrn_tl_cascade", blocks = 1, hidden_units = 16, stn = false }'
SMALL_CRNN = '{ type = "crnn", hidden_units = 32 }'


def _experiment(folder: Path, data: Path, crnn: Path, model: str, name: str = "tp") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'''
name = "{name}"
seed = 1

[data]
root = "{data}"
train = {{ type = "textzoom", roots = ["train1"] }}
test.easy = {{ type = "textzoom", roots = ["test/easy"] }}
test.hard = {{ type = "textzoom", roots = ["test/hard"] }}
num_workers = 0

[model]
{model}

[loss]
combiner = {{ type = "sum" }}

[train]
steps = 4
batch_size = 8
val_every = 2
ckpt_every = 2
log_every = 1
val_batch_size = 6
selectors = ["best_acc", "best_psnr"]

[eval]
batch_size = 6
judge = {SMALL_CRNN}
judge_weights = "{crnn}"
''')
    return path


@pytest.fixture(scope="module")
def crnn_pth(tmp_path_factory) -> Path:
    """A seeded CRNN in meijieru's bare state_dict layout (as crnn.pth)."""
    from tsrx_builtin.crnn import CRNN

    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("crnn") / "crnn.pth"
    torch.save(CRNN(hidden_units=32).state_dict(), path)
    return path


def test_tpgsr_prior_loss_matches_the_official_semantic_loss():
    from tsrx_builtin.prior_losses import TPGSRPriorLoss

    ref = torch.load(FIXTURES / "reference.pt", weights_only=True)["semantic_loss"]
    g = torch.Generator().manual_seed(ref["seed"])
    pred = torch.softmax(torch.randn(26, 3, 37, generator=g), -1)
    gt = torch.softmax(torch.randn(26, 3, 37, generator=g) * 3, -1)
    torch.testing.assert_close(TPGSRPriorLoss(scale=1.0)(pred, gt), ref["value"])
    assert TPGSRPriorLoss()(pred, gt) == pytest.approx(100 * float(ref["value"]), rel=1e-5)


def test_tatt_rotation_and_tsc_loss_match_the_official_code():
    import math

    from tsrx_builtin.prior_losses import TextStructureConsistencyLoss
    from tsrx_builtin.rotation import rotate

    ref = torch.load(FIXTURES / "reference.pt", weights_only=True)["tsc"]
    g = torch.Generator().manual_seed(ref["seed"])
    images, sr, hr = (torch.rand(3, 4, 32, 128, generator=g) for _ in range(3))
    arc = (torch.rand(3, generator=g) * 2 - 1) * 5 / 180 * math.pi
    offsets = torch.rand(3, generator=g)
    rotated = rotate(images, arc, offsets)
    # grid_sample's sampling points are float32 pixel coordinates up to 128 (ulp ~8e-6): the
    # CPU kernel's SIMD path (AVX2 / AVX-512, chosen per machine) moves a few samples by that
    # much (4.6e-6 measured on 4 of 49,152 values), far below anything the loss resolves
    torch.testing.assert_close(rotated, ref["rotated"], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(
        TextStructureConsistencyLoss()(rotated, sr, hr), ref["loss"], atol=1e-6, rtol=1e-5
    )
    assert not torch.allclose(rotated, images, atol=1e-3)  # it did rotate


def test_text_prior_backbone_without_generator_is_a_config_error(tmp_path):
    from tsrx.config.experiment import load_experiment

    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\n[model]\nsr = { type = "tatt" }\n')
    with pytest.raises(ConfigError, match=r"model\.prior.*'tatt' is guided by a text prior"):
        load_experiment(path)
    path.write_text(
        f'name = "bad"\n[model]\ncoupling = "text_prior"\nsr = {{ type = "tsrn" }}\n'
        f"prior = {SMALL_CRNN}\n"
    )
    with pytest.raises(ConfigError, match="needs a text-prior backbone"):
        load_experiment(path)
    path.write_text('name = "bad"\n[model]\nsr = { type = "tsrn" }\nrotate_train = 5.0\n')
    with pytest.raises(ConfigError, match="rotate_train.*text-prior coupling option"):
        load_experiment(path)


def test_rotate_train_needs_a_backbone_that_rotates_its_pairs():
    """The rotation of the training pairs is the backbone's (plugins/rotation.py), not tsrx's."""
    from tsrx.errors import TsrxError
    from tsrx.models.joint import JointModel
    from tsrx_builtin.crnn import CRNN
    from tsrx_builtin.text_prior import TPGSR

    class NoRotation(TPGSR):
        random_rotation = None

    with pytest.raises(TsrxError, match="rotate_train: NoRotation does not rotate its training"):
        JointModel(
            NoRotation(blocks=1, hidden_units=8, stn=False),
            prior=CRNN(),
            coupling="text_prior",
            rotate_train=5.0,
        )


def test_joint_forward_gives_stages_priors_and_a_frozen_teacher():
    from tsrx.models.joint import JointModel
    from tsrx_builtin.crnn import CRNN
    from tsrx_builtin.text_prior import TPGSR

    torch.manual_seed(0)
    model = JointModel(
        TPGSR(blocks=1, hidden_units=8, stn=False),
        coupling="text_prior",
        prior=CRNN(hidden_units=16),
        prior_stages=2,
    )
    assert model.prior_dropout == 0.25 and model.prior_detach is False  # TPGSR's official
    assert not any(p.requires_grad for p in model.prior_teacher.parameters())
    batch = {"lr": torch.rand(4, 4, 16, 64), "hr": torch.rand(4, 4, 32, 128)}
    out = model.train()(batch)
    assert len(out["sr_stages"]) == 2 and out["sr"] is out["sr_stages"][-1]
    assert [p.shape for p in out["prior"]] == [(26, 4, 37)] * 2
    assert out["prior_hr"].shape == (26, 4, 37) and not out["prior_hr"].requires_grad
    assert not model.prior_teacher.training
    out["sr"].mean().backward()  # the SR loss reaches the generator (TPGSR: no detach)
    assert model.prior.cnn.conv0.weight.grad is not None
    evaluated = model.eval()(batch)
    assert set(evaluated) == {"sr", "logits"} and evaluated["sr"].shape == (4, 4, 32, 128)
    model.rotate_train = 5.0  # TATT's rotated pairs: the target rotates, TSC images per stage
    out = model.train()(batch)
    assert out["target_hr"].shape == batch["hr"].shape
    assert not torch.allclose(out["target_hr"], batch["hr"])
    assert [t.shape for t in out["sr_transformed"]] == [(4, 4, 32, 128)] * 2
    with pytest.raises(TsrxError, match="not a CTC recognizer"):
        fake = CRNN(hidden_units=16)
        fake.ctc = False
        JointModel(TPGSR(blocks=1, hidden_units=8, stn=False), coupling="text_prior", prior=fake)


def test_a_frozen_generator_does_not_read_the_hr_image():
    """No text-prior loss without a trainable generator, so no HR prior (a recognizer forward
    a step saved: the pretrained english_g2 costs as much as the small SR network)."""
    from tsrx.models.joint import JointModel
    from tsrx_builtin.crnn import CRNN
    from tsrx_builtin.text_prior import TPGSR

    torch.manual_seed(0)
    prior = CRNN(hidden_units=16)
    model = JointModel(
        TPGSR(blocks=1, hidden_units=8, stn=False, residual="bicubic"),
        coupling="text_prior",
        prior=prior,
        freeze=["prior"],
    )
    assert model.prior_teacher is None and "prior" not in model.loss_terms()
    calls = []
    prior.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    out = model.train()({"lr": torch.rand(4, 4, 16, 64), "hr": torch.rand(4, 4, 32, 128)})
    assert "prior_hr" not in out and len(calls) == 1  # the LR image only
    out["sr"].mean().backward()
    assert all(p.grad is None for p in prior.parameters())


@pytest.mark.slow
def test_tpgsr_joint_trains_and_evaluates(tmp_path, tiny_data, crnn_pth):
    from tsrx.engine.run import run_training

    exp = _experiment(
        tmp_path,
        tiny_data,
        crnn_pth,
        f'''coupling = "text_prior"
prior_weights = "{crnn_pth}"
sr = {SMALL_TPGSR}
prior = {SMALL_CRNN}''',
    )
    run_dir = prepare(exp, tmp_path / "runs")
    result = run_training(run_dir, device="cpu")
    assert result["state"] == "completed"
    train = metrics(run_dir, "train")
    assert set(train[0]["terms"]) == {"sr", "prior"}
    assert train[0]["loss"] == pytest.approx(
        train[0]["terms"]["sr"] + train[0]["terms"]["prior"], rel=1e-5
    )
    state = weights(run_dir / "last.pth")
    initial = torch.load(crnn_pth, weights_only=True)
    # the generator trained, the teacher kept crnn.pth's weights
    assert not torch.equal(state["prior.cnn.conv0.weight"], initial["cnn.conv0.weight"])
    assert torch.equal(state["prior_teacher.cnn.conv0.weight"], initial["cnn.conv0.weight"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tasks"] == ["sr", "prior"] and summary["losses"]["prior"]["type"] == "tpgsr"
    assert summary["final"]["average"]["acc"] is not None  # judged by crnn.pth
    assert summary["final"]["splits"]["hard"]["n"] == 6
    # the run's checkpoint carries its generator: tsrx eval needs no config
    from typer.testing import CliRunner

    from tsrx.cli.main import app

    out = tmp_path / "eval.json"
    res = CliRunner().invoke(
        app, ["eval", "--ckpt", str(run_dir / "last.pth"), "--json", str(out), "--device", "cpu"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["average"]["psnr"] == pytest.approx(
        summary["final"]["average"]["psnr"], rel=1e-5
    )
    from tsrx_builtin.crnn import CRNN

    crnn_params = sum(p.numel() for p in CRNN(hidden_units=32).parameters())
    res = CliRunner().invoke(
        app, ["ckpt", "inspect", str(run_dir / "last.pth")], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    rows = {
        line.split("│")[1].strip(): line for line in res.output.splitlines() if line.count("│") >= 3
    }
    assert f"{crnn_params:,}" in rows["prior"] and f"{crnn_params:,}" in rows["prior_teacher"]


@pytest.mark.slow
def test_tatt_cascade_with_a_frozen_generator_and_tsc_trains(tmp_path, tiny_data, crnn_pth):
    from tsrx.engine.run import run_training

    exp = _experiment(
        tmp_path,
        tiny_data,
        crnn_pth,
        f'''coupling = "text_prior"
prior_weights = "{crnn_pth}"
prior_stages = 2
rotate_train = 5.0
freeze = ["prior"]
sr = {{ type = "tatt", blocks = 1, hidden_units = 16, text_channels = 32, stn = false }}
prior = {SMALL_CRNN}''',
        name="tatt",
    )
    run_dir = prepare(exp, tmp_path / "runs", ["train.steps=2", "train.val_every=2"])
    assert run_training(run_dir, device="cpu")["state"] == "completed"
    # a frozen generator: no TP loss; rotated pairs: TATT's TSC term
    assert set(metrics(run_dir, "train")[0]["terms"]) == {"sr", "consistency"}
    state = weights(run_dir / "last.pth")
    assert not any(k.startswith("prior_teacher.") for k in state)
    assert torch.equal(
        state["prior.cnn.conv0.weight"], torch.load(crnn_pth, weights_only=True)["cnn.conv0.weight"]
    )


def test_eval_of_an_official_tpgsr_checkpoint(tmp_path, tiny_data, crnn_pth):
    from typer.testing import CliRunner

    from tsrx.cli.main import app
    from tsrx_builtin.text_prior import TPGSR

    torch.manual_seed(2)
    official = tmp_path / "model_best_0.pth"
    torch.save(
        {
            "state_dict_G": TPGSR(blocks=1, hidden_units=16, stn=False).state_dict(),
            "info": {"arch": "tsrn_tl_cascade", "iters": 10},
        },
        official,
    )
    config = _experiment(
        tmp_path,
        tiny_data,
        crnn_pth,
        f'''coupling = "text_prior"
prior_weights = "{crnn_pth}"
sr = {SMALL_TPGSR}
prior = {SMALL_CRNN}''',
        name="tp_eval",
    )
    out = tmp_path / "result.json"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "--ckpt",
            str(official),
            "--config",
            str(config),
            "--json",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(out.read_text())
    assert result["format"] == "textzoom" and result["splits"]["easy"]["n"] == 6
    assert result["average"]["psnr"] is not None and result["average"]["acc"] is not None
    # without a config naming the generator: a clear error, not a crash inside the model
    res = CliRunner().invoke(app, ["eval", "--ckpt", str(official), "--device", "cpu"])
    assert isinstance(res.exception, ConfigError)
    assert "guided by a text prior" in str(res.exception) and "[model.prior]" in str(res.exception)


@pytest.mark.slow
def test_tatt_trains_under_ddp_with_two_processes(tmp_path, tiny_data, crnn_pth):
    """Every trainable parameter gets a gradient (DDP refuses otherwise at the 2nd step):
    the trainable generator, TATT's unused official layers frozen, the TSC pass."""
    from tsrx.cli.train_cmd import train_run_dir

    exp = _experiment(
        tmp_path,
        tiny_data,
        crnn_pth,
        f'''coupling = "text_prior"
prior_weights = "{crnn_pth}"
rotate_train = 5.0
sr = {{ type = "tatt", blocks = 1, hidden_units = 16, text_channels = 32 }}
prior = {SMALL_CRNN}''',
        name="tatt_ddp",
    )
    run_dir = prepare(
        exp, tmp_path / "runs", ["train.steps=3", "train.val_every=3", "train.ckpt_every=3"]
    )
    assert train_run_dir(run_dir, 2, "cpu") == "completed"
    train = metrics(run_dir, "train")
    assert [m["step"] for m in train] == [1, 2, 3]
    assert set(train[-1]["terms"]) == {"sr", "prior", "consistency"}


def test_shipped_experiment_has_both_variants_and_names_a_missing_generator(workdir):
    import os
    import subprocess
    import sys

    from tsrx.config.experiment import load_experiment

    path = Path(__file__).resolve().parent.parent / "experiments" / "text_prior.toml"
    runs = {r.name.split(",")[0]: r.config for r in load_experiment(path).runs}
    assert runs["tpgsr"]["model"]["sr"]["type"] == "tsrn_tl_cascade"
    assert runs["tatt"]["model"]["sr"]["type"] == "tatt"
    assert runs["tatt"]["model"]["rotate_train"] == 5.0
    assert runs["tpgsr"]["model"]["rotate_train"] == 0
    assert all(
        c["data"]["root"] == "data/synth" and c["model"]["prior_weights"] == "weights/crnn.pth"
        for c in runs.values()
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsrx",
            "train",
            str(path),
            "--run",
            "tpgsr",
            "--set",
            "data.root=nowhere",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode != 0
    assert "model.prior_weights" in proc.stderr and "weights/crnn.pth" in proc.stderr
    # and what to do: where the file comes from, and the option to change (issue 26)
    text = " ".join(proc.stderr.split())
    assert "meijieru's pretrained crnn.pth" in text and "'Published weights'" in text, text
    assert "--set model.prior_weights=" in text


# --- easyocr as the text-prior generator (issue 22 point 4) --------------------------------


def test_the_prior_class_count_follows_the_generator():
    import tomllib

    from tsrx.models.build import build_model

    pytest.importorskip("easyocr_en_models", reason="the judge extra is not installed")
    sr = '{ type = "tsrn_tl_cascade", blocks = 1, hidden_units = 16, stn = false }'
    for prior, classes in (
        ('{ type = "easyocr" }', 97),
        ('{ type = "easyocr", case = "merge" }', 71),
        (SMALL_CRNN, 37),
    ):
        model_cfg = tomllib.loads(f'coupling = "text_prior"\nsr = {sr}\nprior = {prior}')
        model = build_model({"model": model_cfg, "data": {"mask": True}}, load_init=False)
        assert model.sr.prior_classes == classes
        assert model.sr.infoGen.tconv1.in_channels == classes
    # a user cannot set it against the generator: tsrx supplies it
    bad = '{ type = "tsrn_tl_cascade", prior_classes = 40 }'
    model_cfg = tomllib.loads(f'coupling = "text_prior"\nsr = {bad}\nprior = {SMALL_CRNN}')
    with pytest.raises(ConfigError, match="prior_classes"):
        build_model({"model": model_cfg, "data": {"mask": True}}, load_init=False)


@pytest.mark.parametrize("backbone", ["tpgsr", "tatt"])
def test_easyocr_generates_the_prior_for_tpgsr_and_tatt(tmp_path, tiny_data, crnn_pth, backbone):
    """The pretrained generator needs no prior_weights: TPGSR trains it (97 classes, its frozen
    teacher on HR); TATT reads a frozen, case-merged one (71 classes)."""
    from tsrx.engine.run import run_training

    pytest.importorskip("easyocr_en_models", reason="the judge extra is not installed")
    if backbone == "tpgsr":
        model = f"""coupling = "text_prior"
sr = {SMALL_TPGSR}
prior = {{ type = "easyocr" }}"""
        terms, classes = {"sr", "prior"}, 97
    else:
        model = """coupling = "text_prior"
freeze = ["prior"]
sr = { type = "tatt", blocks = 1, hidden_units = 16, text_channels = 32, stn = false }
prior = { type = "easyocr", case = "merge" }"""
        terms, classes = {"sr"}, 71
    exp = _experiment(tmp_path, tiny_data, crnn_pth, model, name=backbone)
    run_dir = prepare(exp, tmp_path / "runs", ["train.steps=2", "train.val_every=2"])
    assert run_training(run_dir, device="cpu")["state"] == "completed"
    train = metrics(run_dir, "train")
    assert set(train[0]["terms"]) == terms and all(
        torch.isfinite(torch.tensor(t["loss"])) for t in train
    )
    state = weights(run_dir / "last.pth")
    from tsrx_builtin.easyocr import default_weights_path, load_weights

    g2 = load_weights(default_weights_path(), "")
    first = "FeatureExtraction.ConvNet.0.weight"
    assert (
        state[
            "sr.infoGen.tconv1.weight" if backbone == "tpgsr" else "sr.infoGen.fc_in.weight"
        ].shape[0 if backbone == "tpgsr" else 1]
        == classes
    )
    if backbone == "tpgsr":  # the generator trained, its teacher kept english_g2
        assert not torch.equal(state[f"prior.{first}"], g2[first])
        assert torch.equal(state[f"prior_teacher.{first}"], g2[first])
    else:  # frozen: english_g2 unchanged, no teacher
        assert torch.equal(state[f"prior.{first}"], g2[first])
        assert not any(k.startswith("prior_teacher.") for k in state)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["average"]["psnr"] is not None
