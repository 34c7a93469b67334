"""``eval.judge_precision`` (issue 25): the judges read under bf16 autocast when asked.

The readings of a judge that computes in torch depend on it, so it is part of a reading's
key in memory and in the reading store; fp32 keys stay those stored before the option
existed, and a judge without tensors (ppocr's onnxruntime) shares its readings across both.
"""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import tiny_data, tiny_plugin, write_experiment  # noqa: F401
from test_reading_store import Counting, judge, new_process, store  # noqa: F401
from torch import nn

from tsrx.engine import reading_store
from tsrx.models.recognition import Recognition


class Autocast(Counting):
    """A Counting judge that also notes the autocast dtype each read ran under."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype | None] = []

    def recognize(self, images):
        on = torch.is_autocast_enabled("cpu")
        self.seen.append(torch.get_autocast_dtype("cpu") if on else None)
        return super().recognize(images)


def test_a_judge_reads_under_its_precision_and_keys_readings_by_it(store):  # noqa: F811
    images = torch.rand(4, 3, 8, 16)
    rec = Autocast()
    j = judge(rec)
    fp32 = j.read(images, persist=True)
    j.precision = "bf16"
    bf16 = j.read(images, persist=True)
    # read twice (not taken from memory), each under its own arithmetic
    assert rec.read_images == 8 and rec.seen == [None, torch.bfloat16]
    assert j.read(images) == bf16 and rec.read_images == 8  # now from memory
    reading_store.flush_all()

    new_process()  # each precision finds its own readings in the store
    for precision, texts in (("fp32", fp32), ("bf16", bf16)):
        again = judge(Autocast(), precision=precision)
        assert again.read(images) == texts and again.recognizer.read_images == 0
    assert len(list(store.glob("*/identity.json"))) == 2


def test_fp32_keeps_the_identity_stored_before_and_a_judge_without_tensors_shares_it(
    store,  # noqa: F811
):
    from tsrx.engine.judge_identity import identity

    rec = Counting()
    options = {"type": "counting"}
    before = store / identity(rec, None, options)[0]  # the folder fp32 readings had
    for precision, same in (("fp32", True), ("bf16", False)):
        j = judge(rec, options=options, precision=precision)
        tensors = j._tensors()
        shelf = j._shelf(j._reading_keys(torch.rand(1, 3, 4, 4), tensors)[0][0], tensors)
        assert (shelf.folder == before) is same, precision

    class Onnx(nn.Module):
        """No torch tensors: autocast cannot change what it reads."""

        def reading_identity(self) -> str:
            return "an onnx file"

        def recognize(self, images):
            return Recognition(["x"] * len(images))

    onnx = Onnx()
    images = torch.rand(2, 3, 4, 4)
    plain, low = judge(onnx), judge(onnx, precision="bf16")
    assert plain._reading_keys(images, []) == low._reading_keys(images, [])


def test_evaluation_sets_the_judges_precision_and_records_it(tmp_path, tiny_data, tiny_plugin):  # noqa: F811
    from tsrx.config.experiment import load_experiment
    from tsrx.data.loader import build_datasets
    from tsrx.engine.evaluator import evaluate_config
    from tsrx.engine.result_view import result_caption
    from tsrx.errors import TsrxError
    from tsrx.models.build import build_model

    config = load_experiment(write_experiment(tmp_path, tiny_data, tiny_plugin)).runs[0].config
    torch.manual_seed(0)
    model = build_model(config)
    _, _, test = build_datasets(config["data"])
    rec = Autocast()
    config["eval"] = {**(config.get("eval") or {}), "judge_precision": "bf16"}
    with reading_store.turned_off():
        result = evaluate_config(model, test, config, judges=[judge(rec)], batch_size=4)
    assert result["judge_precision"] == "bf16" and result["precision"] == "fp32"
    assert rec.seen and set(rec.seen) == {torch.bfloat16}
    assert any("judge precision bf16" in line for line in result_caption(result))
    # the command line's value wins over the config's
    rec.seen.clear()
    with reading_store.turned_off():
        result = evaluate_config(
            model, test, config, judges=[judge(rec)], batch_size=4, judge_precision="fp32"
        )
    assert result["judge_precision"] == "fp32" and set(rec.seen) == {None}
    assert not any("judge precision" in line for line in result_caption(result))
    with pytest.raises(TsrxError, match="eval.judge_precision 'fp16' needs a CUDA device"):
        evaluate_config(model, test, config, judges=[judge(rec)], judge_precision="fp16")
