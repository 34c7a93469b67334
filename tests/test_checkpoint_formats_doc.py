"""docs/models.md's example of a checkpoint-format plugin works as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tsrx.checkpoint import detect_format, read_official, state_dict_for
from tsrx.registry import CHECKPOINT_FORMATS

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def test_the_documented_reader_claims_its_layout_and_only_it():
    (snippet,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
        if "CHECKPOINT_FORMATS.register" in b
    ]
    exec(compile(snippet, str(DOC), "exec"), {})
    try:
        obj = {"net": {"module.conv.weight": torch.ones(2, 2)}, "epoch": 3}
        assert detect_format(obj) == "my_lab"
        official = read_official(obj)
        assert official.model == {"sr": {"type": "my_sr"}} and official.info == {"epochs": 3}
        assert list(state_dict_for(obj, "sr")) == ["sr.conv.weight"]
        # another layout is still read by its own reader
        assert detect_format({"state_dict_G": {}, "info": {"arch": "tsrn"}}) == "textzoom"
    finally:
        CHECKPOINT_FORMATS.unregister("my_lab")


def test_taking_the_weights_asks_each_reader_once():
    """A reader may convert a large file (keys renamed, tensors split): state_dict_for asks
    each reader once, not once to name the format and again for the weights."""
    calls = []

    @CHECKPOINT_FORMATS.register("counting")
    def counting(obj):
        calls.append(1)
        if isinstance(obj, dict) and "counted" in obj:
            from tsrx.checkpoint import OfficialCheckpoint

            state = {"sr.w": obj["counted"]}
            return OfficialCheckpoint("counting", {"sr": {"type": "x"}}, state)
        return None

    try:
        assert list(state_dict_for({"counted": torch.ones(1)}, "sr")) == ["sr.w"]
        assert len(calls) == 1
    finally:
        CHECKPOINT_FORMATS.unregister("counting")
