"""Joint models built from [model]: couplings, gradients, freezing, one-shot init, DDP keys."""

from __future__ import annotations

import pytest
import torch

from tsrx.checkpoint import load_into, make_checkpoint, save_checkpoint, unwrap
from tsrx.config.experiment import resolve_run
from tsrx.errors import ConfigError, TsrxError
from tsrx.models.build import build_model

SMALL_SR = {"type": "tsrn", "blocks": 1, "hidden_units": 8, "stn": False}


def config(**model) -> dict:
    raw = {"name": "t", "model": model}
    resolved, issues = resolve_run(raw, {}, "<test>")
    if issues:
        raise ConfigError(issues)
    return resolved


def batch(n: int = 2) -> dict:
    return {
        "lr": torch.rand(n, 4, 16, 64),
        "hr": torch.rand(n, 4, 32, 128),
        "label": ["ab"] * n,
        "index": torch.arange(n),
    }


def grads(model, prefix: str) -> list[bool]:
    """Whether each parameter under ``prefix`` received a non-zero gradient."""
    return [
        p.grad is not None and bool(p.grad.abs().sum() > 0)
        for n, p in model.named_parameters()
        if n.startswith(prefix)
    ]


def test_sr_only_and_recognizer_only_models():
    sr_only = build_model(config(sr=SMALL_SR))
    out = sr_only(batch())
    assert out["sr"].shape == (2, 4, 32, 128) and out["logits"] is None
    assert sr_only.recognizer is None and sr_only.head is None

    rec_only = build_model(config(recognizer={"type": "crnn"}, head={"type": "dense"}))
    assert rec_only.rec_input == "hr"
    out = rec_only({"hr": torch.rand(2, 4, 32, 128)})
    assert out["sr"] is None and out["logits"].shape == (26, 2, 37)


def test_image_coupling_sends_recognition_gradients_into_the_sr_backbone():
    model = build_model(config(sr=SMALL_SR, recognizer={"type": "crnn"}, head={"type": "dense"}))
    assert model.rec_input == "sr"
    model(batch(1))["logits"].logsumexp(2).mean().backward()
    assert all(grads(model, "sr."))
    assert all(grads(model, "recognizer.cnn.")) and all(grads(model, "recognizer.rnn.0."))
    assert all(grads(model, "head."))
    # with a head, the recognizer's own classifier is unused and frozen (DDP would wait for it)
    assert not model.recognizer.classifier.weight.requires_grad
    assert model.recognizer.classifier.weight.grad is None


def test_feature_coupling_trains_from_the_feature_layer_on():
    model = build_model(
        config(
            sr=SMALL_SR,
            recognizer={"type": "crnn"},
            head={"type": "mlp"},
            coupling="feature",
            feature_layer="rnn.1",
        )
    )
    model(batch())["logits"].logsumexp(2).mean().backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert all(
        n.startswith(("recognizer.cnn.", "recognizer.rnn.0.", "recognizer.rnn.1.embedding"))
        for n in frozen
    )
    assert not any(grads(model, "recognizer.cnn.")) and not any(grads(model, "recognizer.rnn.0."))
    assert all(grads(model, "recognizer.rnn.1.rnn.")) and all(grads(model, "head."))
    # frozen recognizer layers still pass gradients to the SR backbone (freeze "sr" to stop it)
    assert all(grads(model, "sr."))
    assert {"recognizer.cnn.batchnorm2", "recognizer.cnn.batchnorm6"} <= set(model._frozen_bn)


def test_freeze_prefixes_keep_weights_and_batchnorm_statistics():
    model = build_model(
        config(sr=SMALL_SR, recognizer={"type": "crnn"}, freeze=["sr.block1", "recognizer.cnn"])
    )
    model.train()
    bn = model.recognizer.cnn.batchnorm2
    assert not bn.training and model.sr.block2.bn1.training
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = bn.running_mean.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(batch(1))["logits"].logsumexp(2).mean().backward()
    opt.step()
    after = dict(model.named_parameters())
    assert torch.equal(before["sr.block1.0.weight"], after["sr.block1.0.weight"])
    assert torch.equal(before["recognizer.cnn.conv3.weight"], after["recognizer.cnn.conv3.weight"])
    assert not torch.equal(before["sr.block2.conv1.weight"], after["sr.block2.conv1.weight"])
    assert not torch.equal(
        before["recognizer.rnn.0.rnn.weight_ih_l0"], after["recognizer.rnn.0.rnn.weight_ih_l0"]
    )
    assert torch.equal(stats, bn.running_mean)


def test_bad_model_options_name_the_key():
    with pytest.raises(TsrxError, match="model.freeze: 'recognizer.cnnx'"):
        build_model(config(recognizer={"type": "crnn"}, freeze=["recognizer.cnnx"]))
    with pytest.raises(TsrxError, match="model.feature_layer: 'lstm'.*cnn.conv0"):
        build_model(config(recognizer={"type": "crnn"}, coupling="feature", feature_layer="lstm"))
    with pytest.raises(TsrxError, match="model.head.*needs \\[model.recognizer\\]"):
        build_model(config(sr=SMALL_SR, head={"type": "dense"}))
    with pytest.raises(TsrxError, match="data.mask = true"):
        build_model(config(sr={**SMALL_SR, "mask": False}))


def test_init_loads_parts_in_one_shot_with_a_report(tmp_path, capsys):
    sr_src = build_model(config(sr=SMALL_SR))
    rec_src = build_model(config(recognizer={"type": "crnn"}))
    # the SR part as an official TextZoom file, the recognizer as a DDP-saved bare state_dict
    torch.save({"state_dict_G": sr_src.sr.state_dict()}, tmp_path / "model_best.pth")
    torch.save(
        {f"module.{k}": v for k, v in rec_src.recognizer.state_dict().items()},
        tmp_path / "crnn.pth",
    )
    model = build_model(
        config(
            sr=SMALL_SR,
            recognizer={"type": "crnn"},
            head={"type": "dense"},
            init={"sr": str(tmp_path / "model_best.pth"), "recognizer": str(tmp_path / "crnn.pth")},
        )
    )
    report = model.load_report
    assert report.missing == [f"head.fc.{s}" for s in ("weight", "bias")]
    assert report.unexpected == [] and report.mismatched == []
    assert torch.equal(model.sr.block1[0].weight, sr_src.sr.block1[0].weight)
    assert torch.equal(model.recognizer.cnn.conv0.weight, rec_src.recognizer.cnn.conv0.weight)
    printed = capsys.readouterr().out
    assert "recognizer" in printed and "head: missing: head.fc.weight" in printed


def test_shape_mismatch_is_an_error_unless_allowed(tmp_path):
    src = build_model(config(sr={**SMALL_SR, "hidden_units": 4}))
    save_checkpoint(tmp_path / "sr.pth", make_checkpoint(src.state_dict()))
    cfg = config(sr=SMALL_SR, init={"sr": str(tmp_path / "sr.pth")})
    with pytest.raises(
        TsrxError, match="shape mismatch.*sr.block1.0.weight: checkpoint \\(8, 4, 9, 9\\)"
    ):
        build_model(cfg)
    cfg["model"]["allow_shape_mismatch"] = True
    model = build_model(cfg)
    assert len(model.load_report.mismatched) > 0
    assert model.load_report.part("sr").loaded  # shape-free tensors such as PReLU's still load


def test_ddp_and_plain_models_save_and_load_the_same_keys(tmp_path):
    model = build_model(config(sr=SMALL_SR))
    wrapped = torch.nn.DataParallel(model)  # same `module.` wrapping as DDP, runs on CPU
    assert unwrap(wrapped) is model
    assert list(unwrap(wrapped).state_dict()) == list(model.state_dict())
    # a state saved from the wrapper itself still loads into an unwrapped model
    fresh = build_model(config(sr=SMALL_SR))
    report = load_into(fresh, wrapped.state_dict())
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(fresh.sr.block1[0].weight, model.sr.block1[0].weight)
    # and a plain state into a wrapped model
    other = torch.nn.DataParallel(build_model(config(sr=SMALL_SR)))
    assert load_into(other, model.state_dict()).missing == []
