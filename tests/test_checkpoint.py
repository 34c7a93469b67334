"""tsrx.checkpoint: atomic saves, weights_only refusal, formats, prefixes, load reports."""

from __future__ import annotations

import os
import pickle
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn

from tsrx import checkpoint as ckpt
from tsrx.errors import TsrxError


class Tiny(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.sr = nn.Sequential(nn.Conv2d(3, width, 1), nn.BatchNorm2d(width))
        self.recognizer = nn.Linear(width, 2)


def test_tsrx_checkpoint_round_trip(tmp_path):
    model = Tiny()
    payload = ckpt.make_checkpoint(
        model.state_dict(), step=12, config={"name": "x"}, rng={"torch": torch.get_rng_state()}
    )
    path = ckpt.save_checkpoint(tmp_path / "sub" / "last.pth", payload)
    obj = ckpt.load_checkpoint(path)
    assert obj["format"] == "tsrx" and obj["format_version"] == 1 and obj["step"] == 12
    assert obj["optimizer"] is None and obj["config"] == {"name": "x"}
    assert ckpt.detect_format(obj) == "tsrx"
    assert list(ckpt.state_dict_for(obj)) == list(model.state_dict())
    assert list(ckpt.state_dict_for(obj, "recognizer")) == ["recognizer.weight", "recognizer.bias"]
    assert os.listdir(path.parent) == ["last.pth"]


class Exploit:
    """Unpickling this would run code: what a malicious checkpoint does."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_needs_code_is_refused_as_unsafe(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Exploit(str(marker))}, path)
    with pytest.raises(TsrxError, match=f"{path} is refused as unsafe") as info:
        ckpt.load_checkpoint(path)
    assert not marker.exists()
    # the reason torch gave, not its paragraph of generic advice
    assert "said: Unsupported global: GLOBAL " in str(info.value) and "open" in str(info.value)
    assert "Weights only load failed" not in str(info.value)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(TsrxError, match="nope.pth: no such file"):
        ckpt.load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(TsrxError, match="bad.pth: not a readable torch file"):
        ckpt.load_checkpoint(bad)


def _garbage(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.zeros(64)}, good)
    return {
        "text": b"hello world\n",  # torch's reader raised a bare KeyError here
        "random": bytes(random.Random(0).randrange(256) for _ in range(1000)),
        "cut short": good.read_bytes()[:300],
        "a plain pickle": pickle.dumps({"w": [0.0] * 4}),
    }


@pytest.mark.parametrize("kind", ["text", "random", "cut short", "a plain pickle"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's, on a pickle
def test_a_file_that_is_no_checkpoint_is_named_unreadable_not_unsafe(tmp_path, kind):
    path = tmp_path / "x.pth"
    path.write_bytes(_garbage(tmp_path)[kind])
    with pytest.raises(TsrxError) as info:
        ckpt.load_checkpoint(path)
    message = str(info.value)
    assert f"{path}: not a readable torch file (damaged, cut short" in message, message
    assert "unsafe" not in message and "Weights only load failed" not in message


@pytest.mark.parametrize("victim", ["replace", "fsync"])
def test_a_crash_during_save_leaves_the_old_file_intact(tmp_path, monkeypatch, victim):
    path = tmp_path / "best_acc_model.pth"
    ckpt.save_checkpoint(path, ckpt.make_checkpoint({"w": torch.ones(3)}, step=1))

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, victim, crash)
    with pytest.raises(OSError, match="simulated crash"):
        ckpt.save_checkpoint(path, ckpt.make_checkpoint({"w": torch.zeros(3)}, step=2))
    monkeypatch.undo()
    obj = ckpt.load_checkpoint(path)
    assert obj["step"] == 1 and torch.equal(obj["model"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == [path.name]  # no temp file left behind


def test_detect_format_of_each_kind():
    sd = Tiny().state_dict()
    assert ckpt.detect_format({"state_dict_G": sd, "info": {}}) == "textzoom"
    assert (
        ckpt.detect_format(
            {"cnn.conv0.weight": torch.zeros(1), "rnn.0.rnn.weight_ih_l0": torch.zeros(1)}
        )
        == "crnn"
    )
    assert (
        ckpt.detect_format(
            {
                "module.cnn.conv0.weight": torch.zeros(1),
                "module.rnn.0.rnn.weight_ih_l0": torch.zeros(1),
            }
        )
        == "crnn"
    )
    assert ckpt.detect_format(sd) == "state_dict"
    with pytest.raises(TsrxError, match="unknown checkpoint format.*epoch"):
        ckpt.detect_format({"epoch": 3, "net": "x"})


@pytest.mark.parametrize("prefix", ["", "module.", "module.module."])
def test_module_prefixes_are_stripped(prefix):
    model = Tiny()
    src = Tiny(width=3)
    bare = OrderedDict((f"{prefix}{k}", v) for k, v in src.sr.state_dict().items())
    # a bare SR state_dict (DataParallel-saved or not) goes to sr.*
    report = ckpt.load_into(model, ckpt.state_dict_for(bare, "sr"))
    assert report.part("sr").missing == [] and report.unexpected == []
    assert len(report.part("sr").loaded) == len(bare)
    assert report.part("recognizer").missing == ["recognizer.weight", "recognizer.bias"]
    assert torch.equal(model.sr[0].weight, src.sr[0].weight)
    # a whole joint-model state saved from a DDP wrapper
    whole = OrderedDict((f"{prefix}{k}", v) for k, v in src.state_dict().items())
    report = ckpt.load_into(Tiny(), ckpt.state_dict_for(whole))
    assert report.missing == [] and report.unexpected == []


def test_missing_num_batches_tracked_is_tolerated_and_reported_apart():
    state = {k: v for k, v in Tiny().state_dict().items() if "num_batches_tracked" not in k}
    report = ckpt.load_into(Tiny(), state)
    assert report.missing == [] and report.tolerated == ["sr.1.num_batches_tracked"]


def test_report_lists_unexpected_and_mismatched_keys_per_part():
    state = Tiny(width=5).state_dict()
    state["head.fc.weight"] = torch.zeros(1)
    with pytest.raises(
        TsrxError, match="sr.0.weight: checkpoint \\(5, 3, 1, 1\\), model \\(3, 3, 1, 1\\)"
    ):
        ckpt.load_into(Tiny(), state)
    model = Tiny()
    before = model.sr[0].weight.detach().clone()
    report = ckpt.load_into(model, state, allow_shape_mismatch=True)
    assert report.part("head").unexpected == ["head.fc.weight"]
    assert {k for k, _, _ in report.part("sr").mismatched} >= {"sr.0.weight", "sr.1.running_mean"}
    assert torch.equal(model.sr[0].weight, before)
    assert "sr.1.num_batches_tracked" in report.part("sr").loaded
    from rich.console import Console

    console = Console(record=True, width=120)
    report.print(console)
    text = console.export_text()
    assert "shape mismatch" in text and "head: unexpected: head.fc.weight" in text


def test_foreign_formats_refuse_the_wrong_part():
    with pytest.raises(TsrxError, match="textzoom checkpoint holds sr weights"):
        ckpt.state_dict_for({"state_dict_G": Tiny().state_dict()}, "recognizer")
