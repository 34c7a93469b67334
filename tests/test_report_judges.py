"""`tsrx report` with several judges: ACC per judge per split, PSNR/SSIM once, the paper layout."""

from __future__ import annotations

import pytest
from test_report_fixtures import N, result, write_run

from tsrx.report.collect import collect
from tsrx.report.formats import render_text
from tsrx.report.paper import to_latex, to_paper_markdown
from tsrx.report.render import to_markdown
from tsrx.report.tables import build_report

SPLITS = ("easy", "medium", "hard")


def judged(acc: dict[str, list[float]], psnr: float = 21.0, ssim: float = 0.7) -> dict:
    """A result in the evaluator's shape: ``acc`` judge -> [E, M, H] (primary first)."""
    primary = next(iter(acc))
    splits = {
        s: {
            "n": N[i],
            "acc": acc[primary][i],
            "psnr": psnr + i,
            "ssim": ssim,
            "acc_by_judge": {j: v[i] for j, v in acc.items()},
        }
        for i, s in enumerate(SPLITS)
    }
    total = sum(N)
    avg = {
        "n": total,
        "psnr": sum((psnr + i) * N[i] for i in range(3)) / total,
        "ssim": ssim,
        "acc_by_judge": {j: sum(v[i] * N[i] for i in range(3)) / total for j, v in acc.items()},
    }
    avg["acc"] = avg["acc_by_judge"][primary]
    return {
        "protocol": "textzoom",
        "batch_size": 50,
        "recognizer": f"{primary} desc",
        "primary_judge": primary,
        "judges": {j: f"{j} desc" for j in acc},
        "splits": splits,
        "average": avg,
    }


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for head, base in (("dense", 0.5), ("mlp", 0.6)):
        r = judged(
            {"crnn": [base, base - 0.1, base - 0.2], "ppocr": [base + 0.2, base + 0.1, base]}
        )
        r["baselines"] = {
            "bicubic": judged({"crnn": [0.3, 0.2, 0.1], "ppocr": [0.4, 0.3, 0.2]}, 20.0),
            "hr": judged({"crnn": [0.9, 0.8, 0.7], "ppocr": [0.95, 0.9, 0.85]}),
        }
        r["baselines"]["hr"]["average"].update(psnr=None, ssim=None)
        for s in r["baselines"]["hr"]["splits"].values():
            s.update(psnr=None, ssim=None)
        write_run(root, head, "avg", test={"best_acc": r})
    return root / "joint"


def test_report_columns_are_acc_per_judge_then_psnr_ssim_once(runs):
    rep = build_report(collect(runs), rows="head", selectors=["best_acc"])
    (block,) = rep.blocks
    assert block.judges == ["crnn", "ppocr"]
    assert block.columns[:8] == [
        "E-ACC:crnn",
        "M-ACC:crnn",
        "H-ACC:crnn",
        "A-ACC:crnn",
        "E-ACC:ppocr",
        "M-ACC:ppocr",
        "H-ACC:ppocr",
        "A-ACC:ppocr",
    ]
    assert [c for c in block.columns if "PSNR" in c] == ["E-PSNR", "M-PSNR", "H-PSNR", "A-PSNR"]
    mlp = block.rows[1]
    assert mlp.cells["E-ACC:ppocr"] == pytest.approx(0.8) and mlp.cells[
        "H-ACC:crnn"
    ] == pytest.approx(0.4)
    assert not mlp.mismatched  # stored per-judge averages agree with the recomputed ones
    md = to_markdown(rep)
    assert "judges: crnn = crnn desc; ppocr = ppocr desc" in md
    text = render_text(rep, "rich")
    assert "ACC:ppocr" in text


def test_paper_layout_rows_are_methods_and_baselines_columns_judges(runs):
    rep = build_report(collect(runs), rows="head", selectors=["best_acc"])
    md = to_paper_markdown(rep)
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert header.split(" | ")[1:5] == ["crnn E", "crnn M", "crnn H", "crnn Avg"]
    assert "ppocr Avg" in header and header.endswith("PSNR Avg | SSIM Avg |")
    rows = {
        line.split(" | ")[0][2:]: line.split(" | ")[1:]
        for line in lines
        if line.startswith("| ") and not line.startswith("| Method")
    }
    assert list(rows) == ["dense", "mlp", "Bicubic", "HR"]
    assert rows["mlp"][:3] == ["60.0", "50.0", "40.0"] and rows["mlp"][4] == "80.0"
    assert rows["HR"][-2:] == ["-", "- |"]  # no PSNR / SSIM for HR itself
    tex = to_latex(rep)
    assert "\\multicolumn{4}{c}{crnn}" in tex and "\\multicolumn{4}{c}{ppocr}" in tex
    assert "Bicubic & 30.0 & 20.0 & 10.0" in tex and tex.count("\\toprule") == 1


def test_old_results_without_named_judges_keep_their_columns(tmp_path):
    write_run(
        tmp_path / "runs",
        "dense",
        "avg",
        test={"best_acc": result([0.5] * 4 + [20] * 4 + [0.7] * 4)},
    )
    rep = build_report(collect(tmp_path / "runs" / "joint"), rows="head")
    assert rep.blocks[0].columns[:4] == ["E-ACC", "M-ACC", "H-ACC", "A-ACC"]
    paper = to_paper_markdown(rep)
    assert "| dense | 50.0 | 50.0 | 50.0 | 50.0 | 20.00 | 0.7000 |" in paper
