"""CRNN (meijieru key layout, TextZoom input convention) and the four recognition heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tsrx.checkpoint import detect_format, load_checkpoint, load_into, state_dict_for
from tsrx.errors import ConfigError, TsrxError
from tsrx.registry import HEADS, RECOGNIZERS


def meijieru_crnn_layout(nh: int = 256, nclass: int = 37) -> dict[str, tuple]:
    """crnn.pth's keys and shapes for CRNN(32, 1, 37, 256), written out by hand; it predates
    BatchNorm's num_batches_tracked, so there is none."""
    widths = [1, 64, 128, 256, 256, 512, 512, 512]
    keys: dict[str, tuple] = {}
    for i in range(7):
        k = 2 if i == 6 else 3
        keys[f"cnn.conv{i}.weight"] = (widths[i + 1], widths[i], k, k)
        keys[f"cnn.conv{i}.bias"] = (widths[i + 1],)
        if i in (2, 4, 6):
            for s in ("weight", "bias", "running_mean", "running_var"):
                keys[f"cnn.batchnorm{i}.{s}"] = (widths[i + 1],)
    for j, (n_in, n_out) in enumerate([(512, nh), (nh, nclass)]):
        for sfx in ("", "_reverse"):
            keys[f"rnn.{j}.rnn.weight_ih_l0{sfx}"] = (4 * nh, n_in)
            keys[f"rnn.{j}.rnn.weight_hh_l0{sfx}"] = (4 * nh, nh)
            keys[f"rnn.{j}.rnn.bias_ih_l0{sfx}"] = (4 * nh,)
            keys[f"rnn.{j}.rnn.bias_hh_l0{sfx}"] = (4 * nh,)
        keys[f"rnn.{j}.embedding.weight"] = (n_out, 2 * nh)
        keys[f"rnn.{j}.embedding.bias"] = (n_out,)
    return keys


def crnn():
    return RECOGNIZERS.build({"type": "crnn"}, "model.recognizer")


def test_crnn_matches_meijieru_layout_and_interface():
    model = crnn()
    own = {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert own == meijieru_crnn_layout()
    assert model.alphabet == "0123456789abcdefghijklmnopqrstuvwxyz"
    assert (model.num_classes, model.feature_dim) == (37, 512)
    assert model.classifier is model.rnn[1].embedding
    images = torch.rand(3, 4, 32, 128)
    feats = model.encode(images)
    assert feats.shape == (26, 3, 512)
    logits = model(images)
    assert logits.shape == (26, 3, 37)
    torch.testing.assert_close(logits, model.classifier(feats))
    assert len(model.decode(logits)) == 3


def test_crnn_input_is_textzoom_gray_32x100_in_unit_range():
    rgb = torch.rand(2, 4, 16, 64)
    x = crnn().prepare(rgb)
    resized = F.interpolate(rgb[:, :3], (32, 100), mode="bicubic", align_corners=False)
    expected = 0.299 * resized[:, 0:1] + 0.587 * resized[:, 1:2] + 0.114 * resized[:, 2:3]
    assert x.shape == (2, 1, 32, 100)
    torch.testing.assert_close(x, expected)


def test_meijieru_state_dict_loads_unchanged(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.1 for k, s in meijieru_crnn_layout().items()}
    state.update({k: v.abs() + 0.5 for k, v in state.items() if k.endswith("running_var")})
    path = tmp_path / "crnn.pth"
    torch.save(state, path)
    obj = load_checkpoint(path)
    assert detect_format(obj) == "crnn"

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.recognizer = crnn()

    holder = Holder()
    report = load_into(holder, state_dict_for(obj, "recognizer"))
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.tolerated) == [
        f"recognizer.cnn.batchnorm{i}.num_batches_tracked" for i in (2, 4, 6)
    ]
    torch.testing.assert_close(
        holder.recognizer.rnn[1].embedding.weight, state["rnn.1.embedding.weight"]
    )
    # the plain torch way gives the same model: nothing was renamed on the way
    direct = crnn()
    direct.load_state_dict(state, strict=False)
    images = torch.rand(2, 3, 32, 128)
    holder.eval(), direct.eval()
    with torch.no_grad():
        torch.testing.assert_close(holder.recognizer(images), direct(images))


HEAD_TABLES = [
    {"type": "dense"},
    {"type": "dense", "dropout": 0.2},
    {"type": "mlp", "hidden_units": 64, "activation": "gelu"},
    {"type": "sidernn", "rnn_hidden": 32},
    {"type": "sidernn", "rnn_hidden": 256, "join": "add"},
    {"type": "sidernn+mlp", "rnn_hidden": 32, "hidden_units": 64, "dropout": 0.0},
]


@pytest.mark.parametrize("table", HEAD_TABLES, ids=lambda t: "-".join(map(str, t.values())))
def test_head_forward_and_backward(table):
    head = HEADS.build(table, "model.head", in_features=512, num_classes=37)
    x = torch.randn(26, 3, 512, requires_grad=True)
    out = head(x)
    assert out.shape == (26, 3, 37)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_head_options_are_checked():
    with pytest.raises(TsrxError, match="rnn_hidden"):
        HEADS.build(
            {"type": "sidernn", "rnn_hidden": 100, "join": "add"},
            "model.head",
            in_features=512,
            num_classes=37,
        )
    with pytest.raises(ConfigError, match="hidden_unit"):
        HEADS.build(
            {"type": "mlp", "hidden_unit": 3}, "model.head", in_features=512, num_classes=37
        )
    issues = HEADS.check({"type": "dense", "num_classes": 5}, "model.head")
    assert [i.key for i in issues] == ["model.head.num_classes"]
    assert "set by tsrx" in issues[0].message
