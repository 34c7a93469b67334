"""The TextZoom reader: round trip with the generator, exact preprocessing, every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_support import DATA_KW, good_entries, png, write_raw_lmdb

from tsrx.data.synth import find_fonts, make_sample, synthesize
from tsrx.data.textzoom import TextZoomDataset
from tsrx.data.transforms import preprocess, text_mask
from tsrx.errors import TsrxError


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, train=24, test=[6, 6, 6], seed=3, fonts="builtin")
    return root


def make_ds(root, roots, **kw):
    args = dict(DATA_KW, cache=False)
    args.update(kw)
    return TextZoomDataset(root=str(root), roots=roots, **args)


def test_round_trip_labels_and_pixels(synth_root):
    ds = make_ds(synth_root, ["test/hard"])
    fonts = find_fonts("builtin")
    assert len(ds) == 6
    for pos in range(len(ds)):
        label, hr_png, lr_png = make_sample(3, "hard", pos + 1, fonts)
        item = ds[pos]
        assert item["label"] == label and item["index"] == pos
        hr = preprocess(Image.open(io.BytesIO(hr_png)).convert("RGB"), (32, 128), True)
        lr = preprocess(Image.open(io.BytesIO(lr_png)).convert("RGB"), (16, 64), True)
        assert item["hr"].dtype == torch.uint8 and tuple(item["hr"].shape) == (4, 32, 128)
        assert tuple(item["lr"].shape) == (4, 16, 64)
        assert np.array_equal(item["hr"].numpy(), hr) and np.array_equal(item["lr"].numpy(), lr)


def test_synth_is_deterministic_and_native_sizes_vary(synth_root, tmp_path):
    again = tmp_path / "again"
    synthesize(again, train=24, test=[6, 6, 6], seed=3, fonts="builtin")
    a, b = make_ds(synth_root, ["train1"]), make_ds(again, ["train1"])
    assert [a[i]["label"] for i in range(24)] == [b[i]["label"] for i in range(24)]
    assert all(torch.equal(a[i]["lr"], b[i]["lr"]) for i in range(24))
    other = make_sample(4, "train1", 1, ["builtin"])
    assert other != make_sample(3, "train1", 1, ["builtin"])
    heights = {
        Image.open(io.BytesIO(make_sample(3, "train1", i, ["builtin"])[1])).size[1]
        for i in range(1, 25)
    }
    assert len(heights) > 3 and min(heights) >= 16 and max(heights) <= 64


def _lmdb_items(root):
    import lmdb

    items = {}
    for data in sorted(root.rglob("data.mdb")):
        env = lmdb.open(str(data.parent), readonly=True, lock=False)
        with env.begin() as txn:
            items[str(data.parent.relative_to(root))] = list(txn.cursor())
        env.close()
    return items


def test_synth_with_worker_processes_writes_the_same_bytes(tmp_path, monkeypatch):
    from tsrx.data import synth

    monkeypatch.setattr(synth, "MIN_PARALLEL_SAMPLES", 0)  # a small set still uses the pool
    monkeypatch.setattr(synth, "SAMPLES_PER_TASK", 5)  # several tasks per split, out of order
    kw = dict(train=23, test=[7, 6, 5], val=[4, 3, 2], seed=5, fonts="builtin")
    synthesize(tmp_path / "one", workers=1, **kw)
    synthesize(tmp_path / "two", workers=2, **kw)
    one, two = _lmdb_items(tmp_path / "one"), _lmdb_items(tmp_path / "two")
    assert len(one) == 8 and one == two  # train1, train2, 3 test and 3 val splits
    assert (tmp_path / "one" / "synth.json").read_text() == (
        tmp_path / "two" / "synth.json"
    ).read_text()


def test_concatenated_roots_keep_split_and_lmdb_index(synth_root):
    ds = make_ds(synth_root, ["test/easy", "test/medium"])
    assert len(ds) == 12
    assert ds.lmdb_index(0) == ("test/easy", 1)
    assert ds.lmdb_index(7) == ("test/medium", 2)


def test_preprocessing_sizes_and_mask_threshold():
    # 4x2 image: gray values 10, 200, 50, 90 | 0, 255, 100, 100 -> mean 100.625
    gray = np.array([[10, 200, 50, 90], [0, 255, 100, 100]], dtype=np.uint8)
    img = Image.fromarray(np.stack([gray] * 3, axis=2), "RGB")
    mask = text_mask(img)
    expected = np.array([[255, 0, 255, 255], [255, 0, 255, 255]], dtype=np.uint8)
    assert np.array_equal(mask, expected)
    out = preprocess(Image.new("RGB", (200, 50), (10, 20, 30)), (32, 128), mask=True)
    assert out.shape == (4, 32, 128) and out.dtype == np.uint8
    assert out[0].max() == 10 and out[2].min() == 30
    # a flat image: every pixel equals the mean, so every pixel is "<= mean" -> 1
    assert (out[3] == 255).all()
    assert preprocess(Image.new("RGB", (7, 3)), [16, 64], mask=False).shape == (3, 16, 64)


def test_mask_is_computed_on_the_resized_image():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (20, 70, 3), dtype=np.uint8))
    out = preprocess(img, (16, 64), mask=True)
    resized = img.resize((64, 16), Image.BICUBIC)
    gray = np.asarray(resized.convert("L"))
    assert np.array_equal(out[3], np.where(gray > gray.mean(), 0, 255))
    # the reference's own formulation: Image.point with a threshold lambda on the 'L' image
    thres = np.array(resized.convert("L")).mean()
    reference = np.asarray(resized.convert("L").point(lambda x: 0 if x > thres else 255))
    assert np.array_equal(out[3], reference) and 0 < (out[3] == 255).mean() < 1
    assert np.array_equal(out[:3].transpose(1, 2, 0), np.asarray(resized))


def test_label_filter_by_voc_type(tmp_path):
    entries = good_entries(1)
    entries[b"label-000000001"] = b"Caf3-Bar!"
    write_raw_lmdb(tmp_path / "db", entries)
    assert make_ds(tmp_path, ["db"], voc_type="all")[0]["label"] == "Caf3-Bar!"
    assert make_ds(tmp_path, ["db"], voc_type="upper")[0]["label"] == "Caf3Bar"
    assert make_ds(tmp_path, ["db"], voc_type="lower")[0]["label"] == "caf3bar"
    assert make_ds(tmp_path, ["db"], voc_type="digit")[0]["label"] == "3"


# --- bad input: each case names the LMDB, the split and the 1-based index -------------------


def _bad(entries_edit, n=3):
    entries = good_entries(n)
    entries_edit(entries)
    return entries


BAD_ITEM_CASES = {
    "truncated image": (
        lambda e: e.__setitem__(b"image_hr-000000002", png(80, 24)[:60]),
        "cannot decode image",
    ),
    "non-image value": (
        lambda e: e.__setitem__(b"image_lr-000000002", b"hello"),
        "cannot decode image",
    ),
    "non-UTF-8 label": (lambda e: e.__setitem__(b"label-000000002", b"\xff\xfeab"), "not UTF-8"),
    "empty label": (lambda e: e.__setitem__(b"label-000000002", b""), "empty label"),
    "outside vocabulary": (
        lambda e: e.__setitem__(b"label-000000002", "caf\u00e9".encode()),
        "outside the vocabulary",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ITEM_CASES))
@pytest.mark.parametrize("cache", [False, True])
def test_bad_entry_error_names_split_and_index(tmp_path, case, cache):
    edit, words = BAD_ITEM_CASES[case]
    write_raw_lmdb(tmp_path / "test" / "easy", _bad(edit))
    with pytest.raises(TsrxError) as err:
        ds = make_ds(tmp_path, ["test/easy"], cache=cache)
        for i in range(len(ds)):
            ds[i]
    msg = str(err.value)
    assert words in msg and "index 2" in msg and "split test/easy" in msg
    assert str(tmp_path / "test" / "easy") in msg


@pytest.mark.parametrize("cache", [False, True])
def test_skip_bad_skips_and_counts_without_shifting(tmp_path, cache):
    entries = good_entries(6)
    entries[b"label-000000002"] = b""
    entries[b"image_hr-000000004"] = b"not a png"
    del entries[b"image_lr-000000005"]
    write_raw_lmdb(tmp_path / "db", entries)
    ds = make_ds(tmp_path, ["db"], skip_bad=True, cache=cache)
    assert len(ds) == 3
    assert [ds[i]["label"] for i in range(3)] == ["word1", "word3", "word6"]
    assert [b.index for b in ds.bad] == [2, 4, 5]
    assert ds.lmdb_index(2) == ("db", 6)


def test_missing_num_samples(tmp_path):
    entries = good_entries(2)
    del entries[b"num-samples"]
    write_raw_lmdb(tmp_path / "db", entries)
    with pytest.raises(TsrxError, match=r"missing key 'num-samples'.*split db"):
        make_ds(tmp_path, ["db"])


@pytest.mark.parametrize("cache", [False, True])
def test_count_larger_than_entries(tmp_path, cache):
    entries = good_entries(3)
    entries[b"num-samples"] = b"5"
    write_raw_lmdb(tmp_path / "db", entries)
    with pytest.raises(TsrxError, match=r"split db\) index 4: .*(missing|num-samples is 5)"):
        make_ds(tmp_path, ["db"], cache=cache)
    ds = make_ds(tmp_path, ["db"], cache=cache, skip_bad=True)
    assert len(ds) == 3 and [b.index for b in ds.bad] == [4, 5]


@pytest.mark.parametrize("cache", [False, True])
def test_missing_key(tmp_path, cache):
    entries = good_entries(3)
    del entries[b"image_lr-000000002"]
    write_raw_lmdb(tmp_path / "db", entries)
    with pytest.raises(TsrxError, match=r"index 2"):
        ds = make_ds(tmp_path, ["db"], cache=cache)
        [ds[i] for i in range(len(ds))]


def test_not_an_lmdb(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hi")
    with pytest.raises(TsrxError, match="not an LMDB"):
        make_ds(tmp_path, ["plain"])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TsrxError, match="not an LMDB"):
        make_ds(tmp_path, ["afile"])
    with pytest.raises(TsrxError, match="no such LMDB"):
        make_ds(tmp_path, ["absent"])
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "data.mdb").write_bytes(b"\0" * 100)
    with pytest.raises(TsrxError, match="garbage"):
        make_ds(tmp_path, ["garbage"])


def test_bad_num_samples_value(tmp_path):
    entries = good_entries(1)
    entries[b"num-samples"] = b"many"
    write_raw_lmdb(tmp_path / "db", entries)
    with pytest.raises(TsrxError, match="expected an ASCII integer"):
        make_ds(tmp_path, ["db"])


def test_synth_in_a_daemonic_process_makes_its_samples_itself(monkeypatch):
    """A daemonic process (a multiprocessing worker) may not start children: no pool there."""
    import multiprocessing

    from tsrx.data import synth

    pool = synth._pool(2, 10_000)
    assert pool is not None
    pool.shutdown()
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    assert synth._pool(2, 10_000) is None
