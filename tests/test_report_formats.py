"""Report formats are registered components: the six built-ins, one more from a plugin, and
every format keeps the report's warnings (issue 24); the paper's LaTeX is a captioned table
with the best values marked, and a column where every row ties marks none (issue 26)."""

from __future__ import annotations

import json

import pytest
import typer
from test_report import NOTEBOOK_AVG_BEST_ACC
from test_report_fixtures import notebook_grid, result, write_run
from test_report_judges import judged
from typer.testing import CliRunner

from tsrx.contracts import ContractError
from tsrx.errors import TsrxError
from tsrx.registry import REPORT_FORMATS
from tsrx.report.collect import collect
from tsrx.report.formats import format_names, get_format, render_text
from tsrx.report.paper import to_latex
from tsrx.report.render import to_markdown
from tsrx.report.tables import build_report

BUILTIN = ("rich", "md", "csv", "json", "paper-md", "latex")


def _app():
    from tsrx.cli import report_cmd

    app = typer.Typer()
    report_cmd.register(app)
    return app


def test_the_builtin_formats_are_registered_by_the_builtin_plugin():
    assert set(BUILTIN) <= set(format_names())
    for name in BUILTIN:
        entry = next(e for e in REPORT_FORMATS.entries() if e.name == name)
        assert entry.module == "tsrx_builtin.report_formats"
        assert entry.plugin.startswith("report_formats (tsrx ")


def test_unknown_format_lists_the_registered_ones():
    with pytest.raises(TsrxError, match=r"unknown report format 'mdd'.*did you mean 'md'.*latex"):
        get_format("mdd")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_format_keeps_the_warnings(tmp_path, name):
    """The notebook grid warns three times (identical metrics from different configs): each
    warning reaches the user in the format's text or, for csv, on stderr."""
    exp = notebook_grid(tmp_path / "runs")
    rep = build_report(collect(exp), rows="head", selectors=["best_acc"])
    assert len(rep.warnings) == 3
    fmt = get_format(name)
    if fmt.warnings_in_text:
        text = fmt.render(rep)
        if name == "json":
            assert json.loads(text)["warnings"] == rep.warnings
        else:
            assert all(w in text for w in rep.warnings)
    res = CliRunner().invoke(
        _app(), ["report", str(exp), "--rows", "head", "--selector", "best_acc", "-f", name]
    )
    assert res.exit_code == 0, res.output
    shown = " ".join(res.output.split())  # rich wraps long warnings on stderr
    for w in rep.warnings:
        assert " ".join(w.split())[:120] in shown


class _Plain:
    """A plugin's format: one line per row, label and A-ACC."""

    warnings_in_text = True

    def render(self, report):
        lines = [f"{r.label}\t{r.cells.get('A-ACC')}" for b in report.blocks for r in b.rows]
        return "\n".join([*lines, *(f"! {w}" for w in report.warnings)]) + "\n"


class _Forgetful:
    warnings_in_text = True

    def render(self, report):
        return "no warnings here\n"


@pytest.fixture
def plugin_format():
    with pytest.MonkeyPatch.context():
        REPORT_FORMATS.register("plain-test")(_Plain)
        REPORT_FORMATS.register("forgetful-test")(_Forgetful)
        yield
        REPORT_FORMATS.unregister("plain-test")
        REPORT_FORMATS.unregister("forgetful-test")


def test_a_new_format_is_one_registration(tmp_path, plugin_format):
    exp = notebook_grid(tmp_path / "runs")
    res = CliRunner().invoke(
        _app(), ["report", str(exp), "--rows", "head", "--selector", "best_acc", "-f", "plain-test"]
    )
    assert res.exit_code == 0, res.output
    assert "sidernn\t0.562" in res.stdout and res.stdout.count("! identical") == 3


def test_a_format_that_drops_the_warnings_is_refused(plugin_format):
    with pytest.raises(ContractError, match="forgetful-test.*dropped the warning"):
        get_format("forgetful-test")


def test_rich_text_render_matches_the_registered_format(tmp_path):
    rep = build_report(collect(notebook_grid(tmp_path / "runs")), rows="head")
    assert render_text(rep, "md").startswith(NOTEBOOK_AVG_BEST_ACC)
    assert "E-ACC" in render_text(rep, "rich")


def _tied(tmp_path):
    """Two runs whose ACC is 0.0 on every split (a recognizer that reads nothing)."""
    runs = tmp_path / "runs"
    for head, psnr in (("dense", 20.0), ("mlp", 21.0)):
        values = [0.0] * 4 + [psnr] * 4 + [0.6] * 4
        write_run(runs, head, "avg", test={"best_acc": result(values, stored_average=False)})
    return build_report(collect(runs / "joint"), rows="head", selectors=["best_acc"])


def test_a_column_where_every_row_ties_has_no_best(tmp_path):
    rep = _tied(tmp_path)
    best = rep.blocks[0].best()
    assert "A-ACC" not in best and "A-SSIM" not in best  # all 0.0000, all 0.6000
    assert best["A-PSNR"] == {1}
    md = to_markdown(rep)
    assert "**0.0000**" not in md and "**0.6000**" not in md and "**21.0000**" in md


def test_a_partial_tie_still_marks_every_tied_row(tmp_path):
    runs = tmp_path / "runs"
    for head, acc in (("dense", 0.5), ("mlp", 0.5), ("sidernn", 0.4)):
        values = [acc] * 4 + [20.0] * 4 + [0.6] * 4
        write_run(runs, head, "avg", test={"best_acc": result(values, stored_average=False)})
    rep = build_report(collect(runs / "joint"), rows="head", selectors=["best_acc"])
    assert rep.blocks[0].best()["A-ACC"] == {0, 1}


def test_latex_is_a_captioned_table_with_the_best_values_in_bold(tmp_path):
    root = tmp_path / "runs"
    for head, base in (("dense", 0.5), ("mlp", 0.6)):
        r = judged({"crnn": [base, base - 0.1, base - 0.2]}, psnr=20.0 + base)
        r["baselines"] = {
            "bicubic": judged({"crnn": [0.3, 0.2, 0.1]}, 19.0),
            "hr": judged({"crnn": [0.9, 0.8, 0.7]}),
        }
        write_run(root, head, "avg", test={"best_acc": r})
    rep = build_report(collect(root / "joint"), rows="head", selectors=["best_acc"])
    tex = to_latex(rep)
    assert "\\begin{table}" in tex and "\\end{table}" in tex and "\\centering" in tex
    caption = next(line for line in tex.splitlines() if line.startswith("\\caption{"))
    assert "best\\_acc\\_model.pth" in caption and "test results" in caption
    assert "\\label{tab:tsrx-" in tex
    rows = {line.split(" & ")[0]: line for line in tex.splitlines() if " & " in line}
    assert rows["mlp"].startswith("mlp & \\textbf{60.0} & \\textbf{50.0} & \\textbf{40.0}")
    assert "\\textbf" not in rows["dense"]
    # the baselines never compete (HR would win every ACC column)
    assert "\\textbf" not in rows["HR"] and "\\textbf" not in rows["Bicubic"]
    # SSIM ties (0.7 everywhere): no mark
    assert rows["mlp"].rstrip(" \\").endswith("0.7000")
