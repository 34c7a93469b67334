"""The ppocr judge: the PP-OCRv4 recognizer shipped in rapidocr-onnxruntime (tsrx's judge extra).

Its numbers must be real: it reads the synthetic HR words, and far fewer of the hard
split's bicubic-upscaled LR words. Its own pipeline (rapidocr's TextRecognizer, fed the
8-bit BGR crops rapidocr would get) is the reference for what it reads.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "rapidocr_onnxruntime", reason="the judge extra (rapidocr-onnxruntime) is not installed"
)


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    from tsrx.data.loader import collate_batch
    from tsrx.data.synth import synthesize
    from tsrx.data.textzoom import TextZoomDataset

    root = tmp_path_factory.mktemp("ppocr") / "synth"
    synthesize(root, train=2, test=[2, 2, 24], seed=0)
    ds = TextZoomDataset(
        root=str(root),
        roots=["test/hard"],
        hr_size=[32, 128],
        lr_size=[16, 64],
        mask=False,
        voc_type="all",
        max_len=100,
        skip_bad=False,
    )
    return collate_batch([ds[i] for i in range(len(ds))])


@pytest.fixture(scope="module")
def ppocr():
    from tsrx.registry import RECOGNIZERS

    return RECOGNIZERS.build({"type": "ppocr", "threads": 1}, "test")


def _acc(preds, labels):
    from tsrx.engine.metrics import count_correct

    return count_correct(preds, labels) / len(labels)


def test_ppocr_reads_hr_words_and_far_fewer_bicubic_ones(ppocr, hard):
    from tsrx.engine.judge_build import build_judges

    (judge,) = build_judges({}, cli={"ppocr": {}})
    assert judge.name == "ppocr" and "PP-OCRv4" in judge.description
    hr = _acc(judge.read(hard["hr"]), hard["label"])
    bicubic = torch.nn.functional.interpolate(
        hard["lr"], (32, 128), mode="bicubic", align_corners=False
    )
    bic = _acc(judge.read(bicubic), hard["label"])
    # measured on this split (24 images): HR 0.96-1.0, bicubic about 0.5
    assert hr >= 0.9 and hr - bic >= 0.25, (hr, bic)
    rec = ppocr.recognize(hard["hr"][:4])
    assert all(
        len(s) == len(t) and all(0 < p <= 1 for p in s) for s, t in zip(rec.scores, rec.texts)
    )


def test_ppocr_reads_what_rapidocr_own_pipeline_reads(ppocr, hard):
    pytest.importorskip("cv2")
    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    import tsrx_builtin.ppocr as module

    reference = TextRecognizer(
        {
            "model_path": str(module.default_model_path()),
            "use_cuda": False,
            "intra_op_num_threads": 1,
            "inter_op_num_threads": 1,
            "rec_img_shape": [3, 48, 320],
            "rec_batch_num": 8,
        }
    )
    crops = hard["hr"].mul(255).round().byte().permute(0, 2, 3, 1).numpy()[..., ::-1].copy()  # BGR
    theirs = [text for text, _ in reference(list(crops))[0]]
    ours = ppocr.recognize(hard["hr"]).texts
    # rapidocr resizes 8-bit images with OpenCV, tsrx floats with torch: a rare tie may differ
    agree = sum(a == b for a, b in zip(ours, theirs))
    assert agree >= len(ours) - 1, list(zip(ours, theirs))


def test_ppocr_is_a_judge_only(ppocr):
    assert ppocr.ctc is False and not hasattr(ppocr, "loss") and not list(ppocr.parameters())
    assert ppocr.num_classes == len(ppocr.characters) and ppocr.characters[0] == ""
    assert ppocr.characters[-1] == " "


def test_ppocr_batches_read_side_by_side_match_one_call_at_a_time(hard, monkeypatch):
    # threads = 0 (default): the batches run as single-threaded ONNX calls, as many at once
    # as torch has threads; the output is bit-identical to one call at a time
    from tsrx.registry import RECOGNIZERS
    from tsrx_builtin import ppocr as module

    one_at_a_time = RECOGNIZERS.build({"type": "ppocr", "threads": 1, "batch_size": 4}, "test")
    side_by_side = RECOGNIZERS.build({"type": "ppocr", "batch_size": 4}, "test")
    pools = []
    workers = module._workers
    monkeypatch.setattr(module, "_workers", lambda size: pools.append(size) or workers(size))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        got = side_by_side(hard["hr"])  # 24 images: 6 calls, 2 at a time
        want = one_at_a_time(hard["hr"])
        # one torch thread: one call at a time (torch's resize in prepare() may round
        # differently at another thread count, so compare at the same one)
        torch.set_num_threads(1)
        alone, want_alone = side_by_side(hard["hr"]), one_at_a_time(hard["hr"])
    finally:
        torch.set_num_threads(threads)
    assert pools == [2], pools  # threads = 1 never used the pool, nor one torch thread
    assert torch.equal(got, want) and torch.equal(alone, want_alone)


def test_ppocr_readings_are_stored_under_its_model_file_and_runtime(ppocr, hard):
    """ppocr has no torch tensors: its identity in the reading store is its ONNX file's digest
    and onnxruntime's version (reading_identity); the ONNX batch size is not part of it, as
    it changes no reading (every image of a tensor is padded to the same width)."""
    from pathlib import Path

    from tsrx.engine.judge_identity import identity
    from tsrx.engine.result_cache import file_sha256
    from tsrx.registry import RECOGNIZERS

    found = identity(ppocr, None, None)
    assert found is not None
    (extra,) = found[1]["reading_identity"]
    assert f"onnx sha256 {file_sha256(Path(ppocr.model_path))}" in extra
    assert "onnxruntime " in extra
    texts = [
        RECOGNIZERS.build({"type": "ppocr", "threads": 1, "batch_size": size}, "test")
        .recognize(hard["hr"])
        .texts
        for size in (1, 8, 24)
    ]
    assert texts[0] == texts[1] == texts[2]
