"""The reading store (issue 25): frozen judges' readings kept on disk across processes.

A "new process" here is a new Judge built from the same files with the process's shelves
forgotten (``reading_store._shelves``): what a second ``tsrx eval`` starts from.
"""

from __future__ import annotations

import importlib.util
import logging
import sys

import pytest
import torch
from test_engine_helpers import tiny_data, tiny_plugin, write_experiment  # noqa: F401
from test_eval_cli import _tsrx, _tsrx_side_by_side
from torch import nn

from tsrx.engine import reading_store
from tsrx.models.recognition import Recognition


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The store on, in a temporary folder, with no shelf of an earlier test in memory."""
    folder = tmp_path / "readings"
    monkeypatch.setenv("TSRX_READING_STORE", str(folder))
    monkeypatch.setattr(reading_store, "_shelves", {})
    return folder


def new_process():
    reading_store._shelves.clear()


class Counting(nn.Module):
    """A judge that reads a number off each image and counts the images it reads."""

    ctc = False
    alphabet = "0123456789"
    num_classes = 11

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]), requires_grad=False)
        self.read_images = 0

    def recognize(self, images):
        self.read_images += len(images)
        values = (images.mean(dim=(1, 2, 3)) * self.scale * 1000).long()
        return Recognition([str(int(v)) for v in values])


def judge(rec=None, **kw):
    from tsrx.engine.judges import Judge

    return Judge("counting", "counting judge", rec if rec is not None else Counting(), **kw)


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_data, tiny_plugin):
    """Two tiny SR checkpoints (another training's weights) and a seeded CRNN judge file."""
    from tsrx.config.experiment import load_experiment
    from tsrx.data.loader import build_datasets
    from tsrx.models.build import build_model
    from tsrx.registry import RECOGNIZERS

    tmp = tmp_path_factory.mktemp("reading_store")
    config = load_experiment(write_experiment(tmp, tiny_data, tiny_plugin)).runs[0].config
    models = []
    for seed in (0, 3):
        torch.manual_seed(seed)
        models.append(build_model(config))
    torch.manual_seed(1)
    torch.save(RECOGNIZERS.get("crnn")().state_dict(), tmp / "crnn.pth")
    _, _, test = build_datasets(config["data"])
    return {
        "tmp": tmp,
        "config": config,
        "models": models,
        "test": test,
        "data": tiny_data,
        "plugin": tiny_plugin,
    }


def crnn_judges(parts):
    from tsrx.engine.judge_build import build_judges

    table = {"type": "crnn", "weights": str(parts["tmp"] / "crnn.pth")}
    return build_judges({"judges": {"crnn": table}})


def test_a_second_evaluation_in_a_new_process_reads_only_the_new_images(parts, store, caplog):
    from tsrx.engine.evaluator import evaluate_model

    first_model, second_model = parts["models"]
    test, n = parts["test"], sum(len(ds) for ds in parts["test"].values())
    with caplog.at_level(logging.INFO, logger="tsrx.eval"):
        cold = evaluate_model(
            first_model, test, batch_size=4, judges=crnn_judges(parts), baselines=True
        )
    assert f"judges: 0 reading(s) from the reading store ({store})" in caplog.text
    assert len(list(store.glob("*/*.rd"))) == 1 and len(list(store.glob("*/identity.json"))) == 1

    new_process()  # another checkpoint, another process: the same bicubic and HR images
    (warm_judge,) = crnn_judges(parts)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tsrx.eval"):
        warm = evaluate_model(second_model, test, batch_size=4, judges=[warm_judge], baselines=True)
    assert warm_judge.tally["read"] == n  # the SR images only
    assert warm_judge.tally["store"] == 2 * n and warm_judge.tally["kept"] == 0
    assert f"judges: {2 * n} reading(s) from the reading store" in caplog.text

    # bit-identical with the store off
    with reading_store.turned_off():
        (off_judge,) = crnn_judges(parts)
        assert (
            evaluate_model(second_model, test, batch_size=4, judges=[off_judge], baselines=True)
            == warm
        )
        assert off_judge.tally["read"] == 3 * n and off_judge.tally["store"] == 0
    assert cold["baselines"] == warm["baselines"]
    # SR images are not kept: each checkpoint's are new
    assert len(list(store.glob("*/*.rd"))) == 1


def test_changed_weights_images_dtype_or_shape_are_read_again(store):
    images = torch.rand(5, 3, 8, 16)
    first = judge()
    texts = first.read(images, persist=True)
    reading_store.flush_all()

    new_process()
    again = judge()
    assert again.read(images, persist=True) == texts and again.recognizer.read_images == 0
    changed = images.clone()
    changed[2, 0, 0, 0] += 1e-3  # one value of one image
    again.read(changed)
    assert again.recognizer.read_images == 1
    again.read(images.double())  # same values, another dtype
    again.read(images.reshape(5, 3, 16, 8))  # same bytes, another shape
    assert again.recognizer.read_images == 11

    new_process()
    other = judge(Counting(scale=2.0))  # other weights
    other.read(images)
    assert other.recognizer.read_images == 5
    with torch.no_grad():  # weights changed in place after the identity was computed
        again.recognizer.scale.fill_(2.0)
    again.read(images)
    assert again.recognizer.read_images == 16


def test_own_judges_and_recognizers_without_identity_are_never_stored(store):
    class NoTensors(Counting):
        def __init__(self):
            super().__init__()
            del self.scale
            self.scale = 1.0

    images = torch.rand(3, 3, 8, 16)
    own = judge(own=True)
    own.read(images, persist=True)
    bare = judge(NoTensors())
    bare.read(images, persist=True)
    reading_store.flush_all()
    assert not store.exists()
    assert own.tally["kept"] == bare.tally["kept"] == 0

    class Identified(NoTensors):
        def reading_identity(self):
            return "model file sha256 0123"

    named = judge(Identified())
    named.read(images, persist=True)
    reading_store.flush_all()
    assert named.tally["kept"] == 3 and len(list(store.glob("*/*.rd"))) == 1


def _import_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


RECOGNIZER_FILE = """
import torch
from torch import nn
from tsrx.models.recognition import Recognition


class FileRecognizer(nn.Module):
    ctc = False

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1), requires_grad=False)
        self.read_images = 0

    def recognize(self, images):
        self.read_images += len(images)
        images = images * {factor}  # its preprocessing
        return Recognition([str(int(v * 100)) for v in images.mean(dim=(1, 2, 3))])
"""


def test_an_edited_source_file_reads_again(store, tmp_path, monkeypatch):
    """A changed preprocessing (same class name, same weights) never reuses old readings."""
    path = tmp_path / "reading_store_rec.py"
    monkeypatch.delitem(sys.modules, "reading_store_rec", raising=False)
    images = torch.rand(4, 3, 8, 16)
    path.write_text(RECOGNIZER_FILE.format(factor=1.0))
    old = judge(_import_file(path, "reading_store_rec").FileRecognizer())
    before = old.read(images, persist=True)
    reading_store.flush_all()

    new_process()
    path.write_text(RECOGNIZER_FILE.format(factor=0.5))
    edited = judge(_import_file(path, "reading_store_rec").FileRecognizer())
    after = edited.read(images, persist=True)
    assert edited.recognizer.read_images == 4 and after != before
    reading_store.flush_all()
    assert len(list(store.glob("*/identity.json"))) == 2


def test_shards_of_two_writers_merge_and_a_vanished_shard_is_no_loss(store, monkeypatch):
    monkeypatch.setattr(reading_store, "MERGE_AT", 3)
    about = {"test": True}
    folder = store / "0123"
    one, two = reading_store.Shelf(folder, about), reading_store.Shelf(folder, about)
    keys = [bytes([i]) * 16 for i in range(6)]
    one.lookup([])  # both loaded (nothing yet), then each writes its own shards
    two.lookup([])
    one.add(keys[0], "a")
    two.add(keys[1], "b")
    assert one.flush() == 1 and two.flush() == 1
    one.add(keys[2], "c")
    one.flush()
    assert len(list(folder.glob("*.rd"))) == 3

    third = reading_store.Shelf(folder, about)
    assert third.lookup(keys[:3]) == ["a", "b", "c"]
    late = reading_store.Shelf(folder, about)  # a writer that finishes after third loaded
    late.add(keys[4], "e")
    late.flush()
    third.add(keys[3], "d")
    third.flush()  # it saw 3 shards: one merged shard replaces those it read
    names = sorted(p.name for p in folder.glob("*.rd"))
    assert len(names) == 2 and late.shards[0] in names
    fourth = reading_store.Shelf(folder, about)
    assert fourth.lookup(keys[:5]) == ["a", "b", "c", "d", "e"]

    # a shard removed by another process's merge between listdir and open
    listed = reading_store._shard_names
    calls = []

    def racing(path):
        calls.append(1)
        return ["00000000000000000001-gone.rd", *listed(path)] if len(calls) == 1 else listed(path)

    monkeypatch.setattr(reading_store, "_shard_names", racing)
    fifth = reading_store.Shelf(folder, about)
    assert fifth.lookup(keys[:5]) == ["a", "b", "c", "d", "e"] and len(calls) == 2


def test_an_evaluation_sees_what_other_processes_stored_since_its_shelf_loaded(store, parts):
    """A run's shelf is loaded at its first validation; the runs of a study beside it store
    baseline readings while it trains: its final evaluation takes them (refresh_all)."""
    from tsrx.engine.evaluator import evaluate_model

    (mine,) = crnn_judges(parts)
    mine.read(torch.rand(2, 3, 32, 128), persist=True)  # a validation: the shelf loads now
    my_shelves = dict(reading_store._shelves)
    new_process()  # another run, its own process, evaluating the same test set
    (theirs,) = crnn_judges(parts)
    test = parts["test"]
    evaluate_model(parts["models"][0], test, judges=[theirs], baselines=True)
    images = sum(len(ds) for ds in test.values())
    assert theirs.tally["kept"] == 2 * images
    reading_store._shelves.clear()  # back in the first run's process, its shelf as loaded
    reading_store._shelves.update(my_shelves)
    before = dict(mine.tally)
    evaluate_model(parts["models"][1], test, judges=[mine], baselines=True)
    assert mine.tally["store"] - before["store"] == 2 * images  # bicubic and HR
    assert mine.tally["read"] - before["read"] == images  # its own SR images only


def test_a_damaged_shard_is_ignored_with_a_warning(store, caplog):
    images = torch.rand(4, 3, 8, 16)
    writer = judge()
    writer.read(images[:2], persist=True)
    reading_store.flush_all()
    writer.read(images[2:], persist=True)
    reading_store.flush_all()
    first, second = sorted(store.glob("*/*.rd"))
    second.write_bytes(second.read_bytes()[:-5])  # truncated (a full disk, a killed copy)
    (first.parent / "00000000000000000000-x.rd").write_bytes(b"not a shard at all")

    new_process()
    reader = judge()
    with caplog.at_level(logging.WARNING, logger="tsrx.eval"):
        assert reader.read(images) == writer.read(images)
    assert reader.recognizer.read_images == 2  # the truncated shard's images, read again
    assert caplog.text.count("ignored") == 2 and "checksum" in caplog.text

    with pytest.raises(ValueError, match="checksum"):  # one changed byte is found too
        good = reading_store.encode({b"k" * 16: "word"})
        reading_store.decode(good[:10] + b"X" + good[11:])


def test_the_off_switches(store, monkeypatch, parts):
    from tsrx.engine.evaluator import evaluate_config

    images = torch.rand(3, 3, 8, 16)
    monkeypatch.setenv("TSRX_READING_STORE", "off")
    judge().read(images, persist=True)
    reading_store.flush_all()
    assert not store.exists()

    monkeypatch.setenv("TSRX_READING_STORE", str(store))
    config = {
        **parts["config"],
        "eval": {**parts["config"].get("eval", {}), "reading_store": False},
    }
    evaluate_config(
        parts["models"][0], parts["test"], config, judges=crnn_judges(parts), baselines=True
    )
    assert not store.exists()

    monkeypatch.delenv("TSRX_READING_STORE")
    monkeypatch.setenv("TSRX_CACHE_DIR", str(store.parent / "cache"))
    assert reading_store.root() == store.parent / "cache" / "readings"
    monkeypatch.delenv("TSRX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(store.parent / "xdg"))
    assert reading_store.root() == store.parent / "xdg" / "tsrx" / "readings"


def test_a_mistyped_eval_reading_store_key_is_refused(tmp_path, tiny_data, tiny_plugin):
    from tsrx.config.experiment import load_experiment
    from tsrx.errors import TsrxError

    path = write_experiment(tmp_path, tiny_data, tiny_plugin)
    text = path.read_text()
    for line, key in (
        ('reading_store = "maybe"', "eval.reading_store"),
        ("reading_stor = false", "reading_stor"),
    ):
        path.write_text(text.replace("[eval]\n", f"[eval]\n{line}\n", 1))
        with pytest.raises(TsrxError, match=key):
            load_experiment(path)


@pytest.mark.slow
def test_tsrx_eval_says_where_its_readings_came_from(parts, tmp_path):
    """Two `tsrx eval` processes: the second takes the bicubic and HR readings from the store."""
    from tsrx.checkpoint import make_checkpoint, save_checkpoint

    ckpt = save_checkpoint(
        tmp_path / "sr.pth",
        make_checkpoint(parts["models"][0].state_dict(), config=parts["config"]),
    )
    args = [
        "eval",
        "--ckpt",
        ckpt,
        "--plugin",
        parts["plugin"],
        "--data",
        parts["data"],
        "--judge",
        f"crnn={parts['tmp'] / 'crnn.pth'}",
        "--baselines",
    ]
    # beside the first, one told not to use the store (it prints no store line, even while
    # the store fills); then a second evaluation, with the store filled
    env = {"TSRX_READING_STORE": str(tmp_path / "readings")}
    env |= {"TSRX_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cold, off = _tsrx_side_by_side(args, [*args, "--no-reading-store"], cwd=tmp_path, env=env)
    warm = _tsrx(*args, cwd=tmp_path, env=env)  # one thread too: the same table as the first
    assert cold.returncode == 0 and warm.returncode == 0, cold.stderr + warm.stderr
    n = sum(len(ds) for ds in parts["test"].values())
    assert "judges: 0 reading(s) from the reading store" in cold.stderr
    assert f"judges: {2 * n} reading(s) from the reading store" in warm.stderr
    assert cold.stdout.replace("\n", "") == warm.stdout.replace("\n", "")  # the same table
    assert off.returncode == 0 and "reading store" not in off.stderr


def test_what_the_process_read_before_is_kept_when_asked_and_memory_stays_bounded(
    store, monkeypatch
):
    from tsrx.engine import judges

    images = torch.rand(4, 3, 8, 16)
    reader = judge()
    with reading_store.turned_off():  # a validation's HR probe, say, with the store off
        texts = reader.read(images, persist=True)
    assert reader.read(images, persist=True) == texts  # the final evaluation's HR row
    assert reader.recognizer.read_images == 4 and reader.tally["kept"] == 4

    monkeypatch.setattr(judges, "MAX_READINGS", 5)  # memory full: forgotten, never a KeyError
    fresh = torch.rand(3, 3, 8, 16)
    assert reader.read(torch.cat([images[:2], fresh]))[:2] == texts[:2]
    assert len(reader.readings) <= 5


def test_an_evaluation_that_fails_midway_keeps_what_it_read(parts, store):
    from tsrx.engine.evaluator import evaluate_model

    model = parts["models"][0]
    calls = []

    def second_batch_fails(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory, say")

    hook = model.sr.register_forward_hook(second_batch_fails)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            evaluate_model(
                model, parts["test"], batch_size=4, judges=crnn_judges(parts), baselines=True
            )
    finally:
        hook.remove()
    (shard,) = store.glob("*/*.rd")
    assert len(reading_store.decode(shard.read_bytes())) == 8  # batch 1: 4 bicubic + 4 HR


def test_a_store_that_cannot_be_used_costs_a_warning_not_the_evaluation(store, monkeypatch, caplog):
    blocked = store.parent / "a_file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("TSRX_READING_STORE", str(blocked))
    images = torch.rand(3, 3, 8, 16)
    reader = judge()
    with caplog.at_level(logging.WARNING, logger="tsrx.eval"):
        texts = reader.read(images, persist=True)
        assert reading_store.flush_all() == 0
    assert texts == judge().read(images) and "not kept" in caplog.text


def test_an_edited_helper_of_the_same_package_reads_again(store, tmp_path, monkeypatch):
    """A plugin's preprocessing in a sibling module (ASTER's beam search is in its own file)."""
    package = tmp_path / "rs_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "rec.py").write_text(
        RECOGNIZER_FILE.format(factor="scale()").replace(
            "from torch import nn\n", "from torch import nn\nfrom rs_plugin.helper import scale\n"
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    images = torch.rand(4, 3, 8, 16)

    def fresh_judge():
        for name in ("rs_plugin", "rs_plugin.rec", "rs_plugin.helper"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        return judge(importlib.import_module("rs_plugin.rec").FileRecognizer())

    (package / "helper.py").write_text("def scale():\n    return 1.0\n")
    before = fresh_judge()
    before.read(images, persist=True)
    reading_store.flush_all()
    new_process()
    unchanged = fresh_judge()
    unchanged.read(images, persist=True)
    assert unchanged.recognizer.read_images == 0
    new_process()
    (package / "helper.py").write_text("def scale():\n    return 0.25  # edited\n")
    edited = fresh_judge()
    edited.read(images, persist=True)
    assert edited.recognizer.read_images == 4


def test_many_new_readings_are_written_before_the_evaluation_ends(store, monkeypatch):
    monkeypatch.setattr(reading_store, "FLUSH_EVERY", 4)
    reader = judge()
    reader.read(torch.rand(6, 3, 8, 16), persist=True)  # e.g. a job killed right after
    (shard,) = store.glob("*/*.rd")
    assert len(reading_store.decode(shard.read_bytes())) == 4
    assert reading_store.flush_all() == 2


def test_only_a_frozen_judge_with_every_tensor_on_the_cpu_reads_on_the_host():
    """In a GPU evaluation such a judge (ppocr: onnxruntime on the CPU, no torch tensors)
    gets its images on the CPU and so the memory and the store; a judge moved to the GPU
    reads them where they are."""
    from tsrx.engine.judges import Judge

    assert Judge("ppocr-like", "no tensors", nn.Identity()).reads_on_host()
    assert judge().reads_on_host()  # its weights on the CPU
    assert not judge(own=True).reads_on_host()  # the model's own: never stored
    assert not judge(Counting().to("meta")).reads_on_host()  # weights on another device
