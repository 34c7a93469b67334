"""Reports with uncertainty: seeds aggregate, paired tests from per-image records, old runs."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from test_report_fixtures import config, write_run

from tsrx.config.toml_write import dumps
from tsrx.engine import result_cache as cache
from tsrx.records import RecordCollector
from tsrx.report.collect import collect
from tsrx.report.formats import render_text
from tsrx.report.paired import MARK, NO_RECORDS
from tsrx.report.tables import build_report

SPLITS = ("easy", "medium", "hard")
N = 300  # images per split


def _row(c, psnr):
    return {
        "psnr": np.full(len(c), psnr, np.float32),
        "ssim": np.full(len(c), 0.5, np.float32),
        "preds": {"crnn": ["word" if x else "wrong" for x in c]},
        "correct": {"crnn": list(map(bool, c))},
    }


def records_and_result(correct: dict[str, np.ndarray], psnr: float = 20.0, bicubic=None):
    """Records of one evaluation (one judge, ``crnn``) and the result they imply."""
    col = RecordCollector(list(SPLITS), ["crnn"])
    for s in SPLITS:
        c = correct[s]
        rows = {"model": _row(c, psnr)}
        if bicubic is not None:
            rows["bicubic"] = _row(bicubic[s], psnr - 1)
        col.add(s, list(range(1, len(c) + 1)), ["word"] * len(c), rows)
    rec = col.build(meta={"protocol": "per-image", "primary_judge": "crnn"})
    splits = {
        s: {
            "n": len(correct[s]),
            "acc": float(np.mean(correct[s])),
            "psnr": psnr,
            "ssim": 0.5,
            "acc_by_judge": {"crnn": float(np.mean(correct[s]))},
        }
        for s in SPLITS
    }
    total = sum(len(correct[s]) for s in SPLITS)
    acc = sum(float(np.sum(correct[s])) for s in SPLITS) / total
    result = {
        "protocol": "per-image",
        "batch_size": 50,
        "recognizer": "crnn (x)",
        "primary_judge": "crnn",
        "judges": {"crnn": "crnn (x)"},
        "splits": splits,
        "average": {
            "n": total,
            "acc": acc,
            "psnr": psnr,
            "ssim": 0.5,
            "acc_by_judge": {"crnn": acc},
        },
    }
    return rec, result


def seed_run(runs, head, seed, correct, *, records=True, psnr=20.0, bicubic=None, combiner=None):
    """A run of the grid head x seed (x combiner, when given) with a cached test result (and
    its records)."""
    both = f"head={head},combiner={combiner}" if combiner else f"head={head}"
    d = runs / "joint" / f"{both},seed={seed}-0000abcd"
    d.mkdir(parents=True)
    cfg = dict(config(head, combiner or "avg"), seed=seed)
    (d / "config.toml").write_text(dumps(cfg))
    point = {"model.head.type": head, "seed": seed}
    if combiner:
        point = {"model.head.type": head, "loss.combiner.type": combiner, "seed": seed}
    meta = {"experiment": "joint", "run": d.name, "point": point}
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "status.json").write_text(json.dumps({"state": "completed", "step": 10}))
    rec, result = records_and_result(correct, psnr, bicubic)
    ckpt = d / "best_acc_model.pth"
    ckpt.write_bytes(f"weights {head} {seed}".encode())
    cache.store(d, ckpt, cache.eval_settings(cfg), result, rec if records else None)
    return d


def _draw(rng, p: float) -> dict[str, np.ndarray]:
    return {s: rng.random(N) < p for s in SPLITS}


def test_seeds_become_one_row_with_mean_sd_and_n_in_every_format(tmp_path):
    rng = np.random.default_rng(0)
    for head, p in (("dense", 0.50), ("mlp", 0.60)):
        for seed in (0, 1, 2):
            seed_run(tmp_path, head, seed, _draw(rng, p + 0.02 * seed), psnr=20 + seed)
    rep = build_report(collect(tmp_path / "joint"), selectors=["best_acc"])
    (block,) = rep.blocks
    assert block.seed_axis and [r.label for r in block.rows] == ["dense", "mlp"]
    mlp = block.rows[1]
    assert mlp.seeds == 3 and len(mlp.runs) == 3
    assert mlp.cells["A-PSNR"] == pytest.approx(21.0) and mlp.spread["A-PSNR"] == pytest.approx(1.0)
    (cmp,) = block.comparisons["A-ACC"]
    assert cmp.label_a == "mlp" and cmp.result.test == "hierarchical bootstrap"
    assert cmp.result.seeds_a == cmp.result.seeds_b == 3 and cmp.result.low > 0
    md = render_text(rep, "md")
    assert "| head | seeds |" in md and "21.0000 ± 1.0000" in md and "| mlp | 3 |" in md
    assert "A-ACC: mlp - dense = +" in md and "hierarchical bootstrap" in md
    rows = list(csv.DictReader(io.StringIO(render_text(rep, "csv"))))
    assert rows[1]["seeds"] == "3" and float(rows[1]["A-PSNR sd"]) == pytest.approx(1.0)
    data = json.loads(render_text(rep, "json"))
    jrow = data["blocks"][0]["rows"][1]
    assert jrow["seeds"] == 3 and jrow["sd"]["A-PSNR"] == pytest.approx(1.0)
    assert len(jrow["runs"]) == 3
    test = data["blocks"][0]["paired_tests"]["A-ACC"][0]
    assert test["seeds"] == [3, 3] and test["bootstrap"]["replicates"] == 10_000
    assert "21.00±1.00" in render_text(rep, "paper-md") and "(n=3)" in render_text(rep, "paper-md")
    assert "21.00$\\pm$1.00" in render_text(rep, "latex")
    assert "21.0000 ± 1.0000" in render_text(rep, "rich")


def test_a_best_that_is_not_significantly_better_is_marked(tmp_path):
    rng = np.random.default_rng(1)
    base = _draw(rng, 0.5)
    flip = {s: base[s].copy() for s in SPLITS}
    for s in SPLITS:  # three more images right: the highest number, not a real win
        wrong = np.flatnonzero(~flip[s])[:1]
        flip[s][wrong] = True
    write = [("dense", base), ("mlp", flip)]
    for head, correct in write:
        seed_run(tmp_path / "a", head, 0, correct)
    far = {s: base[s] | (rng.random(N) < 0.3) for s in SPLITS}  # many more right: significant
    for head, correct in (("dense", base), ("mlp", far)):
        seed_run(tmp_path / "b", head, 0, correct)
    close = build_report(collect(tmp_path / "a" / "joint"), selectors=["best_acc"]).blocks[0]
    clear = build_report(collect(tmp_path / "b" / "joint"), selectors=["best_acc"]).blocks[0]
    assert close.not_significant["A-ACC"] == {1} and "A-ACC" not in clear.not_significant
    (c,) = close.comparisons["A-ACC"]
    assert (c.result.b, c.result.c) == (3, 0) and c.result.test == "McNemar exact"
    assert c.result.p == pytest.approx(0.25)  # 2 * 0.5**3
    md = render_text(build_report(collect(tmp_path / "a" / "joint"), selectors=["best_acc"]), "md")
    assert f"{MARK}**" in md and "not significantly better than the runner-up" in md
    assert "discordant 3 / 0" in md
    latex = render_text(
        build_report(collect(tmp_path / "a" / "joint"), selectors=["best_acc"]), "latex"
    )
    assert "$^\\dagger$" in latex


def test_holm_corrects_a_columns_comparisons(tmp_path):
    rng = np.random.default_rng(2)
    for head, p in (("a", 0.60), ("b", 0.55), ("c", 0.54), ("d", 0.50)):
        seed_run(tmp_path, head, 0, _draw(rng, p))
    block = build_report(collect(tmp_path / "joint"), selectors=["best_acc"]).blocks[0]
    found = block.comparisons["A-ACC"]
    assert len(found) == 3
    raw = sorted(p.result.p for p in found)
    adjusted = sorted(p.result.p_holm for p in found)
    assert adjusted[0] == pytest.approx(min(1, 3 * raw[0]))


def test_old_run_directories_without_records_still_report(tmp_path):
    rng = np.random.default_rng(3)
    seed_run(tmp_path, "dense", 0, _draw(rng, 0.5), records=False)
    seed_run(tmp_path, "mlp", 0, _draw(rng, 0.6))
    rep = build_report(collect(tmp_path / "joint"), selectors=["best_acc"])
    (block,) = rep.blocks
    assert NO_RECORDS in block.rows[0].notes and block.comparisons == {}
    for fmt in ("rich", "md", "csv", "json", "paper-md", "latex"):
        assert render_text(rep, fmt)
    assert "no per-image records" in render_text(rep, "md")
    # and a run directory of before (the notebook fixture: no records anywhere)
    write_run(tmp_path / "old", "dense", "avg", test={"best_acc": _old_result()})
    assert (
        build_report(collect(tmp_path / "old" / "joint"), selectors=["best_acc"])
        .blocks[0]
        .rows[0]
        .cells["E-ACC"]
        == 0.5
    )


def _old_result():
    from test_report_fixtures import result

    return result([0.5] * 4 + [20.0] * 4 + [0.5] * 4)


def test_tsrx_diff_compares_two_runs_and_a_run_with_bicubic(tmp_path):
    from test_report_diff import _app
    from typer.testing import CliRunner

    from tsrx.report.stats import mcnemar_exact

    rng = np.random.default_rng(4)
    base = _draw(rng, 0.4)
    better = {s: base[s] | (rng.random(N) < 0.2) for s in SPLITS}
    bicubic = {s: base[s] & (rng.random(N) < 0.5) for s in SPLITS}
    a = seed_run(tmp_path, "mlp", 0, better, bicubic=bicubic)
    b = seed_run(tmp_path, "dense", 0, base)
    res = CliRunner().invoke(_app(), ["diff", str(a), str(b), "--json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["differences"] == [
        {"key": "model.head.type", "a": "mlp", "b": "dense"},
    ]
    rows = {r["split"]: r for r in body["paired"]}
    assert list(rows) == [*SPLITS, "all"]
    gained = sum(int(np.sum(better[s] & ~base[s])) for s in SPLITS)
    assert rows["all"]["discordant"] == {"a_only": gained, "b_only": 0}
    assert rows["all"]["p"] == mcnemar_exact(gained, 0) and rows["all"]["ci"][0] > 0
    again = CliRunner().invoke(_app(), ["diff", str(a), str(b), "--json"])
    assert json.loads(again.stdout)["paired"] == body["paired"]  # seeded: reproducible
    res = CliRunner().invoke(_app(), ["diff", str(a), "bicubic"])
    assert res.exit_code == 0, res.output
    assert "paired comparison on the same images" in res.stdout and "McNemar" in res.stdout
    res = CliRunner().invoke(_app(), ["diff", str(b), "bicubic"])
    assert "no bicubic row recorded" in str(res.exception) + res.output
    old = seed_run(tmp_path, "sidernn", 0, base, records=False)
    res = CliRunner().invoke(_app(), ["diff", str(a), str(old)])
    assert res.exit_code == 0 and "no per-image records" in res.stdout


def test_the_row_axis_is_compared_pooled_over_the_other_axes_and_seeds(tmp_path):
    """The study's question: uncertainty against avg over all four heads and three seeds (one
    test), besides the per-head blocks; and the heads against each other over the combiners."""
    rng = np.random.default_rng(6)
    heads = {"dense": 0.40, "mlp": 0.45, "sidernn": 0.50, "sidernn+mlp": 0.55}
    latent = {s: rng.random(N) for s in SPLITS}
    for head, p in heads.items():
        for combiner, gain in (("avg", 0.0), ("uncertainty", 0.03)):
            for seed in (0, 1, 2):
                correct = {s: latent[s] < p + gain + 0.01 * (seed - 1) for s in SPLITS}
                seed_run(tmp_path, head, seed, correct, combiner=combiner)
    rep = build_report(collect(tmp_path / "joint"), rows="combiner", selectors=["best_acc"])
    assert [b.group for b in rep.blocks] == [{"head": h} for h in heads]
    assert all(b.rows[0].seeds == 3 and len(b.comparisons["A-ACC"]) == 1 for b in rep.blocks)
    (pooled,) = rep.pooled
    assert (pooled.label_a, pooled.label_b, pooled.groups) == ("uncertainty", "avg", 4)
    assert pooled.over == "head: dense, mlp, sidernn, sidernn+mlp"
    c = pooled.result
    assert (c.seeds_a, c.seeds_b) == (12, 12) and c.test == "hierarchical bootstrap"
    means = {
        comb: np.mean([b.rows[k].cells["A-ACC"] for b in rep.blocks])
        for k, comb in enumerate(("avg", "uncertainty"))
    }
    assert c.diff == pytest.approx(means["uncertainty"] - means["avg"])
    assert c.low > 0 and c.p < 0.05 and c.p_holm == c.p  # one comparison: Holm changes nothing
    md = render_text(rep, "md")
    assert "### combiner, pooled over the other axes" in md
    assert "pooled over head: dense, mlp, sidernn, sidernn+mlp (4 groups; 12 vs 12 runs)" in md
    assert "uncertainty - avg = +0.03" in md
    data = json.loads(render_text(rep, "json"))
    assert data["pooled_tests"][0]["groups"] == 4 and data["pooled_tests"][0]["seeds"] == [12, 12]
    for fmt in ("rich", "paper-md", "latex"):
        assert "pooled over head" in render_text(rep, fmt), fmt
    # the heads against each other, pooled over the combiners: best against 3, Holm-corrected
    heads_rep = build_report(collect(tmp_path / "joint"), rows="head", selectors=["best_acc"])
    found = heads_rep.pooled
    assert [p.label_b for p in found] == ["sidernn", "mlp", "dense"]
    assert all(p.label_a == "sidernn+mlp" and p.groups == 2 for p in found)
    raw = sorted(p.result.p for p in found)
    assert sorted(p.result.p_holm for p in found)[0] == pytest.approx(min(1, 3 * raw[0]))
    # one block only (no other axis): nothing to pool
    assert build_report(collect(tmp_path / "joint"), rows="run").pooled == []
    # a row value without records in some block is left out, and the report says where
    old = tmp_path / "old"
    for head in ("dense", "mlp"):
        for combiner in ("avg", "uncertainty"):
            keep = not (head == "mlp" and combiner == "avg")
            correct = {s: latent[s] < 0.5 for s in SPLITS}
            seed_run(old, head, 0, correct, combiner=combiner, records=keep)
    rep = build_report(collect(old / "joint"), rows="combiner", selectors=["best_acc"])
    assert rep.pooled == [] and rep.pooled_notes == [
        "avg: no result with per-image records in best_acc_model.pth · head=mlp: left out of "
        "the pooled test"
    ]
    assert "left out of the pooled test" in render_text(rep, "md")


def test_a_seed_with_only_a_validation_result_makes_the_block_mixed(tmp_path):
    """The block's header describes every seed's value, not only the first seed's."""
    from test_report_fixtures import write_run

    rng = np.random.default_rng(8)
    for seed in (0, 1):
        seed_run(tmp_path, "dense", seed, _draw(rng, 0.5))
    _, val = records_and_result(_draw(rng, 0.5))
    d = write_run(
        tmp_path,
        "dense",
        "avg",
        val={"best_acc": val},
        cfg=dict(config("dense", "avg"), seed=2),
        name="head=dense,seed=2-0000abcd",
    )
    point = {"model.head.type": "dense", "seed": 2}
    (d / "meta.json").write_text(json.dumps({"experiment": "joint", "run": d.name, "point": point}))
    (block,) = build_report(collect(tmp_path / "joint"), selectors=["best_acc"]).blocks
    assert block.rows[0].seeds == 3 and block.source == "mixed"
    assert any(n.startswith("seed 2: validation result") for n in block.rows[0].notes)
