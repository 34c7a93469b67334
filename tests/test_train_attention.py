"""Attention recognizers (ASTER, MORAN) train with their own loss through the trainer."""

from __future__ import annotations

import json

import pytest
import torch
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, weights, write_experiment  # noqa: F401

from tsrx.errors import TsrxError

REC_ONLY = [
    "train.steps=2",
    "train.val_every=100",
    "train.ckpt_every=100",
    "train.batch_size=4",
    "train.selectors=[]",
]


def _run(tmp_path, tiny_data, tiny_plugin, recognizer: str, extra=()):
    from tsrx.engine.run import run_training

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, "att")
    text = exp.read_text().replace('sr = { type = "tiny_sr" }', f"recognizer = {recognizer}")
    # training only: evaluating attention recognizers (recognize()) is the evaluator's part
    text = "\n".join(line for line in text.splitlines() if not line.startswith("test."))
    exp.write_text(text + '\n[optim]\ntype = "adam"\nlr = 1e-4\n')
    run_dir = prepare(exp, tmp_path / "runs", [*REC_ONLY, *extra])
    return run_dir, run_training(run_dir, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize(
    "recognizer", ['{ type = "aster", voc_type = "lower", max_len = 8 }', '{ type = "moran" }']
)
def test_attention_recognizer_fine_tunes_with_its_own_loss(
    tmp_path, tiny_data, tiny_plugin, recognizer
):
    torch.manual_seed(0)
    run_dir, result = _run(tmp_path, tiny_data, tiny_plugin, recognizer)
    assert result["state"] == "completed" and result["step"] == 2
    train = metrics(run_dir, "train")
    assert [m["step"] for m in train] == [1, 2]
    assert all(
        m["terms"]["recognition"] > 0 and m["loss"] == pytest.approx(m["terms"]["recognition"])
        for m in train
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["losses"]["recognition"]["type"] == "own"  # the default, recorded
    state = weights(run_dir / "last.pth")
    assert state and all(k.startswith("recognizer.") for k in state)


@pytest.mark.slow
def test_sr_model_trains_through_an_attention_recognizer(tmp_path, tiny_data, tiny_plugin):
    from tsrx.engine.run import run_training

    exp = write_experiment(tmp_path, tiny_data, tiny_plugin, "joint_att")
    text = exp.read_text().replace(
        'sr = { type = "tiny_sr" }', 'sr = { type = "tiny_sr" }\nrecognizer = { type = "moran" }'
    )
    exp.write_text("\n".join(line for line in text.splitlines() if not line.startswith("test.")))
    run_dir = prepare(exp, tmp_path / "runs", REC_ONLY)
    result = run_training(run_dir, device="cpu")
    assert result["state"] == "completed"
    terms = [m["terms"] for m in metrics(run_dir, "train")]
    assert all(set(t) == {"sr", "recognition"} and t["recognition"] > 0 for t in terms)
    state = weights(run_dir / "last.pth")
    assert any(k.startswith("sr.") for k in state)
    assert any(k.startswith("recognizer.MORN") for k in state)


def test_heads_and_ctc_losses_are_refused_for_attention_recognizers():
    from tsrx.engine.build import build_losses
    from tsrx.models.joint import JointModel
    from tsrx.registry import HEADS
    from tsrx_builtin.aster import Aster
    from tsrx_builtin.heads import MLPHead  # noqa: F401  (registers the heads)

    rec = Aster(voc_type="lower")
    head = HEADS.build({"type": "mlp"}, "model.head", in_features=512, num_classes=39)
    with pytest.raises(TsrxError, match="attention recognizer.*Remove \\[model.head\\]"):
        JointModel(recognizer=rec, head=head)
    with pytest.raises(TsrxError, match="attention recognizer"):
        JointModel(recognizer=rec, coupling="feature")
    from tsrx_builtin.crnn import CRNN

    attention, ctc = JointModel(recognizer=rec), JointModel(recognizer=CRNN())
    with pytest.raises(TsrxError, match="trains with its own loss"):
        build_losses({"recognition": {"type": "ctc"}}, ["recognition"], attention)
    with pytest.raises(TsrxError, match="no loss of its own"):
        build_losses({"recognition": {"type": "own"}}, ["recognition"], ctc)
    from tsrx.models.build import build_model

    with pytest.raises(TsrxError, match="model.head: moran is an attention recognizer"):
        build_model({"model": {"recognizer": {"type": "moran"}, "head": {"type": "mlp"}}})
    losses, tables, _ = build_losses({}, ["recognition"], attention)
    assert tables["recognition"]["type"] == "own"


def test_joint_model_gives_the_recognizer_loss_in_training_only():
    from tsrx.models.joint import JointModel
    from tsrx_builtin.moran import Moran

    torch.manual_seed(0)
    model = JointModel(recognizer=Moran(augment=False))
    batch = {"hr": torch.rand(2, 3, 32, 128), "label": ["abc", "Z9"]}
    out = model(batch)
    assert out["logits"] is None and out["rec_loss"].ndim == 0 and out["rec_loss"] > 0
    model.eval()
    with torch.no_grad():
        assert model(batch)["rec_loss"] is None
