"""Loading: the decoded cache, the training collate, workers, the resumable sampler, [data]."""

from __future__ import annotations

import os

import pytest
import torch
from test_data_support import DATA_KW

from tsrx.data.loader import (
    ResumableSampler,
    build_datasets,
    build_loader,
    collate_batch,
    ensure_synth,
)
from tsrx.data.synth import synthesize
from tsrx.data.textzoom import TextZoomDataset
from tsrx.errors import TsrxError


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "data"
    synthesize(root, train=40, test=[5, 6, 7], seed=1, fonts="builtin")
    return root


def data_cfg(root, **kw):
    cfg = dict(
        DATA_KW,
        root=str(root),
        synth=None,
        cache=True,
        num_workers=0,
        train={"type": "textzoom", "roots": ["train1"], "cache": True, "cache_dir": ""},
        val={},
        test={s: {"type": "textzoom", "roots": [f"test/{s}"]} for s in ("easy", "medium", "hard")},
    )
    cfg.update(kw)
    return cfg


@pytest.mark.parametrize("mask", [True, False])
def test_cache_gives_identical_tensors(synth_root, tmp_path, mask):
    kw = dict(DATA_KW, mask=mask)
    plain = TextZoomDataset(str(synth_root), ["train1", "test/hard"], cache=False, **kw)
    cached = TextZoomDataset(
        str(synth_root), ["train1", "test/hard"], cache=True, cache_dir=str(tmp_path / "c"), **kw
    )
    assert len(plain) == len(cached) == 47
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a["label"] == b["label"] and a["index"] == b["index"]
        assert torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
    entries = sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir())
    assert len(entries) == 2  # one per LMDB
    again = TextZoomDataset(
        str(synth_root), ["train1"], cache=True, cache_dir=str(tmp_path / "c"), **kw
    )
    assert torch.equal(again[5]["hr"], plain[5]["hr"])
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.is_dir()) == entries


def test_cache_default_folder_and_key_follows_sizes(synth_root):
    TextZoomDataset(str(synth_root), ["test/easy"], cache=True, **DATA_KW)
    TextZoomDataset(str(synth_root), ["test/easy"], cache=True, **dict(DATA_KW, hr_size=[64, 256]))
    entries = [p for p in (synth_root / ".tsrx_cache").iterdir() if p.is_dir()]
    assert len(entries) == 2 and all(p.name.startswith("test_easy-") for p in entries)


def test_collate_matches_the_batch_contract(synth_root):
    ds = TextZoomDataset(str(synth_root), ["test/medium"], cache=False, **DATA_KW)
    batch = collate_batch([ds[0], ds[3]])
    assert batch["lr"].shape == (2, 4, 16, 64) and batch["hr"].shape == (2, 4, 32, 128)
    assert batch["lr"].dtype == torch.float32 and 0 <= batch["hr"].min() and batch["hr"].max() <= 1
    assert torch.equal(batch["hr"][1], ds[3]["hr"].float() / 255)
    assert set(batch["hr"][:, 3].unique().tolist()) <= {0.0, 1.0}
    assert batch["index"].dtype == torch.long and batch["index"].tolist() == [0, 3]
    assert batch["label"] == [ds[0]["label"], ds[3]["label"]]


def test_two_workers_load_every_sample_once(synth_root, tmp_path):
    # the parent has the LMDB open already: workers must open their own (fork safety)
    ds = TextZoomDataset(str(synth_root), ["train1"], cache=False, **DATA_KW)
    first = ds[0]
    sampler = ResumableSampler(len(ds), seed=7)
    loader = build_loader(ds, 8, sampler, num_workers=2)
    assert loader.persistent_workers
    seen = []
    for batch in loader:
        assert batch["lr"].shape == (8, 4, 16, 64)
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(40)) and seen == sampler.shard()
    cached = TextZoomDataset(
        str(synth_root), ["train1"], cache=True, cache_dir=str(tmp_path / "c"), **DATA_KW
    )
    batches = list(build_loader(cached, 16, None, num_workers=2))
    assert [len(b["label"]) for b in batches] == [16, 16, 8]
    assert torch.equal(batches[0]["hr"][0], first["hr"].float() / 255)


def test_sampler_shards_are_disjoint_and_deterministic():
    shards = [ResumableSampler(103, rank=r, world_size=4, seed=5).shard() for r in range(4)]
    assert all(len(s) == 25 for s in shards)
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == 100
    assert ResumableSampler(103, rank=1, world_size=4, seed=5).shard() == shards[1]
    s = ResumableSampler(103, rank=1, world_size=4, seed=5)
    s.set_epoch(1)
    assert list(s) != shards[1] and sorted(s.shard(0)) == sorted(shards[1])
    padded = [
        ResumableSampler(10, rank=r, world_size=4, shuffle=False, drop_last=False).shard()
        for r in range(4)
    ]
    assert [len(p) for p in padded] == [3, 3, 3, 3]
    assert sorted(set(i for p in padded for i in p)) == list(range(10))


def test_sampler_resumes_mid_epoch():
    s = ResumableSampler(50, seed=2)
    s.set_epoch(3)
    full = list(s)
    s.advance(16)
    state = s.state_dict()
    assert state == {"epoch": 3, "position": 16}
    fresh = ResumableSampler(50, seed=2)
    fresh.load_state_dict(state)
    fresh.set_epoch(3)  # a trainer re-entering the same epoch keeps the position
    assert list(fresh) == full[16:] and len(fresh) == 34
    fresh.set_epoch(4)
    assert fresh.state_dict() == {"epoch": 4, "position": 0} and len(list(fresh)) == 50
    with pytest.raises(TsrxError, match="outside this rank's shard"):
        fresh.load_state_dict({"epoch": 0, "position": 99})
    with pytest.raises(TsrxError, match="rank 4"):
        ResumableSampler(10, rank=4, world_size=4)


def test_build_datasets_from_data_section(synth_root):
    train, val, test = build_datasets(data_cfg(synth_root))
    assert len(train) == 40 and list(test) == ["easy", "medium", "hard"]
    assert [len(d) for d in test.values()] == [5, 6, 7]
    assert val == test
    cfg = data_cfg(
        synth_root,
        train=None,
        val={"small": {"type": "textzoom", "roots": ["test/easy", "test/hard"]}},
    )
    train, val, test = build_datasets(cfg)
    assert train is None and len(val["small"]) == 12
    cfg = data_cfg(synth_root, cache=False)
    assert build_datasets(cfg)[0].splits[0].cache is None
    with pytest.raises(TsrxError, match="data.train.hr_size"):
        build_datasets(
            data_cfg(synth_root, train={"type": "textzoom", "roots": ["train1"], "hr_size": [1, 2]})
        )


def test_ensure_synth_builds_once(tmp_path):
    cfg = data_cfg(
        tmp_path / "d", synth={"train": 6, "test": [2, 2, 2], "seed": 0, "fonts": "builtin"}
    )
    assert ensure_synth(cfg) is True
    assert ensure_synth(cfg) is False
    assert os.path.isfile(tmp_path / "d" / "test" / "hard" / "data.mdb")
    # without data.synth a root that does not exist is an error, never created (issue 26)
    with pytest.raises(TsrxError, match=r"data.root = '.*none': no such folder"):
        ensure_synth(data_cfg(tmp_path / "none"))
    assert not (tmp_path / "none").exists()


def test_ensure_synth_rejects_a_misspelt_key(tmp_path):
    cfg = data_cfg(tmp_path / "d", synth={"trian": 6, "fonts": "builtin"})
    with pytest.raises(TsrxError, match=r"data.synth.trian: unknown key"):
        ensure_synth(cfg)
    assert not (tmp_path / "d").exists()


def _build_cache(args):
    from tsrx.data.cache import load_or_build

    lmdb_path, cache_dir = args
    c = load_or_build(lmdb_path, [32, 128], [16, 64], True, cache_dir)
    return str(c.folder), c.images(3)[0].sum().item()


def test_simultaneous_cache_builds_make_one_entry(synth_root, tmp_path):
    import multiprocessing as mp

    args = (str(synth_root / "train1"), str(tmp_path / "c"))
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(_build_cache, [args, args])
    assert results[0] == results[1]
    assert [p.name for p in (tmp_path / "c").iterdir() if p.is_dir()] == [
        os.path.basename(results[0][0])
    ]


@pytest.mark.slow
def test_parallel_cache_build_equals_serial(synth_root, tmp_path, monkeypatch):
    import numpy as np

    import tsrx.data.cache as cache

    monkeypatch.setattr(cache, "CHUNK", 7)
    monkeypatch.setattr(cache, "PARALLEL_FROM", 10**9)
    serial = cache.load_or_build(synth_root / "train1", [32, 128], [16, 64], True, tmp_path / "s")
    monkeypatch.setattr(cache, "PARALLEL_FROM", 1)
    monkeypatch.setattr(cache, "_usable_cpus", lambda: 2)
    parallel = cache.load_or_build(synth_root / "train1", [32, 128], [16, 64], True, tmp_path / "p")
    assert parallel.labels == serial.labels and len(serial.labels) == 40
    for a, b in zip(serial._arrays(), parallel._arrays()):
        assert np.array_equal(a, b)
