"""MORAN (plugins/moran.py) against TextZoom's reference code.

tests/fixtures/moran/ holds what tests/fixtures/moran/record_moran.py recorded by running
TextZoom's own ``MORAN`` (outside this repository) on synthetic TextZoom-format images with
weights from a seeded recipe, keyed as the DataParallel-saved ``moran.pth`` is.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tsrx.errors import TsrxError
from tsrx_builtin.moran import Moran, moran_state_dict, read_moran

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from recognizer_seeds import seeded_state  # noqa: E402

META = json.loads((FIXTURES / "moran" / "layout.json").read_text())
REF = torch.load(FIXTURES / "moran" / "reference.pt", weights_only=True)


def published_weights() -> dict:
    """The seeded weights under the published file's keys (``module.MORN...``)."""
    return seeded_state(
        META["layout"],
        META["seed"],
        scales={f"module.{k}": v for k, v in META["scales"].items()},
        offsets={f"module.{k}": v for k, v in META["offsets"].items()},
    )


@pytest.fixture(scope="module")
def model() -> Moran:
    m = Moran()
    m.load_official(published_weights(), "moran.pth")  # strict, module. prefixes as saved
    return m.eval()


def test_state_dict_layout_is_the_reference_one():
    own = Moran().state_dict()
    assert [f"module.{k}" for k in own] == [k for k, _, _ in META["layout"]]
    assert [list(v.shape) for v in own.values()] == [s for _, s, _ in META["layout"]]


def test_test_loop_matches_the_reference(model):
    images = REF["images"].float() / 255.0
    with torch.no_grad():
        gray = model.prepare(images)
        rectified = model.MORN(gray, refine=1)
        features = model.ASRN.features(rectified)
        logits = model.ASRN.attentionL2R.greedy(features, 20)
        rec = model.recognize(images)
    torch.testing.assert_close(gray, REF["gray"], rtol=0, atol=1e-6)
    torch.testing.assert_close(rectified, REF["rectified"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(features, REF["features"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, REF["logits"], rtol=1e-4, atol=1e-4)
    from tsrx_builtin.moran import ALPHABET

    decoded = ["".join(ALPHABET[i] for i in row) for row in logits.argmax(2).tolist()]
    assert decoded == REF["decoded"]
    assert rec.texts == REF["texts"]
    assert any(len(t) == 20 for t in rec.texts) and any(0 < len(t) < 20 for t in rec.texts)
    for text, scores in zip(rec.texts, rec.scores):
        assert len(scores) == len(text) and all(0.0 < s <= 1.0 for s in scores)


def test_training_loss_matches_the_reference_without_randomness(model):
    images = REF["images"].float() / 255.0
    model.augment = False
    try:
        with torch.no_grad():
            loss = model.loss(images, REF["labels"])
    finally:
        model.augment = True
    torch.testing.assert_close(loss, REF["train_loss"], rtol=1e-5, atol=1e-5)


def test_training_loss_with_augmentation_is_finite_and_differentiable():
    torch.manual_seed(0)
    m = Moran().train()
    images = torch.rand(2, 3, 16, 64)
    loss = m.loss(images, ["Hello", "42"])
    loss.backward()
    assert torch.isfinite(loss)
    assert m.ASRN.attentionR2L.generator.weight.grad is not None


def test_published_layout_is_read():
    found = read_moran(published_weights())
    assert found.format == "moran" and found.model == {"recognizer": {"type": "moran"}}
    assert found.info == {"classes": 37, "hidden_units": 256}
    assert all(k.startswith("recognizer.") and "module." not in k for k in found.state)


def test_bad_checkpoints_say_what_they_are():
    state = published_weights()
    bad = dict(state)
    bad["module.ASRN.attentionL2R.generator.weight"] = torch.zeros(38, 256)
    with pytest.raises(TsrxError, match="38 output classes.*37"):
        read_moran(bad)
    from tsrx_builtin.crnn import CRNN

    with pytest.raises(TsrxError, match="crnn.pth: expected a MORAN checkpoint.*CRNN"):
        moran_state_dict(CRNN().state_dict(), "crnn.pth")
    from tsrx_builtin.aster import Aster

    aster = {"state_dict": Aster(voc_type="lower").state_dict()}
    with pytest.raises(TsrxError, match="an ASTER checkpoint"):
        moran_state_dict(aster, "aster.pth.tar")
    assert read_moran(CRNN().state_dict()) is None
