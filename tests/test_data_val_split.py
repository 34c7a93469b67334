"""The synthetic validation split: val/{easy,medium,hard}, disjoint from test, for checkpoint
selection that never looks at the test split (issue 22)."""

from __future__ import annotations

import json

from tsrx.data.lmdb_io import hr_key, label_key, open_readonly


def _samples(path):
    """(label, HR bytes) of every sample of an LMDB split."""
    env = open_readonly(path)
    try:
        with env.begin() as txn:
            n = int(txn.get(b"num-samples"))
            return [(txn.get(label_key(i)), txn.get(hr_key(i))) for i in range(1, n + 1)]
    finally:
        env.close()


def test_val_splits_share_no_image_with_test_and_are_reproducible(tmp_path):
    from tsrx.data.synth import synthesize

    synthesize(tmp_path / "a", train=4, train2=0, test=[5, 5, 5], val=[5, 4, 3], seed=2)
    synthesize(tmp_path / "b", train=4, train2=0, test=[5, 5, 5], val=[5, 4, 3], seed=2)
    manifest = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert manifest["val"] == [5, 4, 3]
    for split, n in (("easy", 5), ("medium", 4), ("hard", 3)):
        val = _samples(tmp_path / "a" / "val" / split)
        test = _samples(tmp_path / "a" / "test" / split)
        assert len(val) == n
        assert not {hr for _, hr in val} & {hr for _, hr in test}
        assert val == _samples(tmp_path / "b" / "val" / split)


def test_a_set_without_val_gets_it_when_the_config_asks(tmp_path):
    from tsrx.data.loader import ensure_synth
    from tsrx.data.synth import synthesize

    root = tmp_path / "synth"
    synthesize(root, train=4, train2=0, test=[2, 2, 2], seed=0, fonts="builtin")
    spec = {"train": 4, "train2": 0, "test": [2, 2, 2], "val": [3, 3, 3]}
    assert ensure_synth({"root": str(root), "synth": spec})
    assert len(_samples(root / "val" / "hard")) == 3
    assert json.loads((root / "synth.json").read_text())["val"] == [3, 3, 3]
    assert not ensure_synth({"root": str(root), "synth": spec})  # done once
    fresh = tmp_path / "fresh"
    assert ensure_synth({"root": str(fresh), "synth": {**spec, "seed": 0}})
    assert _samples(fresh / "val" / "easy") == _samples(root / "val" / "easy")
