"""Per-image records: what an evaluation writes image by image, and reading it back."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine_helpers import tiny_data, tiny_plugin  # noqa: F401
from test_judges import parts  # noqa: F401

from tsrx.errors import TsrxError
from tsrx.records import RecordCollector, read_records, to_bytes, write_records


def _evaluate(parts, protocol):
    from tsrx.data.loader import build_datasets
    from tsrx.engine.evaluator import evaluate_model, take_records
    from tsrx.engine.judge_build import build_judges

    tmp = parts["tmp"]
    judges = build_judges(
        {
            "judges": {
                "a": {"type": "crnn", "weights": str(tmp / "crnn.pth")},
                "b": {"type": "crnn", "weights": str(tmp / "crnn2.pth")},
            }
        },
        parts["model"],
    )
    _, _, test = build_datasets(parts["config"]["data"])
    result = evaluate_model(
        parts["model"],
        test,
        protocol=protocol,
        batch_size=3,
        judges=judges,
        baselines=True,
        records=True,
    )
    return result, take_records(result), test


def test_records_hold_every_image_and_agree_with_the_result(parts, tmp_path):
    result, rec, test = _evaluate(parts, "per-image")
    assert "records" not in result  # taken out: the result stays plain JSON
    assert len(rec) == sum(len(ds) for ds in test.values())
    assert rec.splits == list(test) and rec.judges == ["a", "b"]
    assert set(rec.rows) == {"model", "bicubic", "hr"}
    assert rec.rows["hr"].psnr is None and rec.rows["bicubic"].psnr is not None
    for split in test:
        mask = rec.in_split(split)
        assert rec.index[mask].tolist() == list(range(1, len(test[split]) + 1))  # LMDB, 1-based
        for row, res in [("model", result), *result["baselines"].items()]:
            for judge in ("a", "b"):
                assert rec.correct(row, judge)[mask].mean() == pytest.approx(
                    res["splits"][split]["acc_by_judge"][judge]
                )
            if row != "hr":  # per-image protocol: the split's PSNR is the mean of the images'
                assert rec.rows[row].psnr[mask].mean() == pytest.approx(
                    res["splits"][split]["psnr"], rel=1e-5
                )
                assert rec.rows[row].ssim[mask].mean() == pytest.approx(
                    res["splits"][split]["ssim"], rel=1e-5
                )
    assert rec.labels == [test[s][i]["label"] for s in test for i in range(len(test[s]))]
    assert rec.meta["primary_judge"] == "a" and rec.meta["protocol"] == "per-image"

    path = write_records(tmp_path / "r" / "x.records.npz", rec)
    back = read_records(path)
    assert back.same_images(rec) and back.labels == rec.labels
    for row in rec.rows:
        for judge in ("a", "b"):
            assert np.array_equal(back.correct(row, judge), rec.correct(row, judge))
            assert back.rows[row].preds(judge) == rec.rows[row].preds(judge)
        for metric in ("psnr", "ssim"):
            a, b = getattr(rec.rows[row], metric), getattr(back.rows[row], metric)
            assert (a is None and b is None) or np.array_equal(a, b)
    assert back.correct() is back.correct("model", "a")  # primary judge by default


def test_records_under_the_textzoom_protocol_are_per_image_too(parts):
    result, rec, test = _evaluate(parts, "textzoom")
    first = next(iter(test))
    assert rec.rows["model"].psnr[rec.in_split(first)].shape == (len(test[first]),)
    assert rec.meta["protocol"] == "textzoom" and rec.meta["batch_size"] == 3


def test_ranks_chunks_merge_in_split_and_index_order():
    col = RecordCollector(["easy", "hard"], ["j"])
    row = {"model": {"psnr": [1.0, 2.0], "ssim": [0.1, 0.2], "preds": {"j": ["a", "b"]}}}
    row["model"]["correct"] = {"j": [True, False]}
    rank0 = [{"split": "hard", "index": [3, 1], "labels": ["x", "y"], **row}]
    rank1 = [{"split": "easy", "index": [2, 1], "labels": ["p", "q"], **row}]
    rec = col.build([rank0, rank1])
    assert rec.split.tolist() == [0, 0, 1, 1] and rec.index.tolist() == [1, 2, 1, 3]
    assert rec.labels == ["q", "p", "y", "x"]
    assert rec.rows["model"].preds("j") == ["b", "a", "b", "a"]
    assert rec.correct().tolist() == [False, True, False, True]


def test_a_file_that_is_not_records_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.records.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(TsrxError, match=r"bad\.records\.npz: not a per-image records file"):
        read_records(bad)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.frombuffer(b'{"format": "x"}', np.uint8))
    with pytest.raises(TsrxError, match="not a tsrx per-image records file"):
        read_records(other)
    rec = RecordCollector(["s"], []).build()
    assert len(read_records(_written(tmp_path, rec))) == 0
    col = RecordCollector(["s"], ["j"])
    col.add("s", [1], ["a\x00b"], {})
    with pytest.raises(TsrxError, match="NUL"):
        to_bytes(col.build())


def _written(tmp_path, rec):
    return write_records(tmp_path / "empty.records.npz", rec)
