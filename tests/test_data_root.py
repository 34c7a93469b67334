"""A data.root that does not exist is an error unless synthesis at that very root was asked
for; a run records that its data was synthetic and every table says so (issue 26, "wrong
results without a word")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsrx.config.experiment import load_experiment
from tsrx.data.loader import ensure_synth
from tsrx.data.roots import is_synthetic
from tsrx.errors import TsrxError

EXPERIMENT = """
name = "e"
[data]
root = "{root}"
synth = {{ train = 8, test = [2, 2, 2], seed = 0 }}
train = {{ type = "textzoom", roots = ["train1"] }}
[model]
sr = {{ type = "tsrn", blocks = 1, hidden_units = 4, stn = false }}
"""


def data_of(tmp_path: Path, *sets: str) -> dict:
    path = tmp_path / "e.toml"
    path.write_text(EXPERIMENT.format(root=tmp_path / "synth"))
    return load_experiment(path, list(sets)).runs[0].config["data"]


def test_a_mistyped_root_is_an_error_not_a_synthetic_data_set(tmp_path):
    typo = tmp_path / "TextZom"
    data = data_of(tmp_path, f"data.root={typo}")
    with pytest.raises(TsrxError) as info:
        ensure_synth(data)
    text = str(info.value)
    assert f"data.root = {str(typo)!r}: no such folder" in text
    assert "data.synth synthesises only at the root written with it" in text
    assert f"--set data.synth.root={typo}" in text  # what to do when it was meant
    assert not typo.exists()


def test_synthesis_at_the_root_written_with_synth_or_asked_for_explicitly(tmp_path):
    data = data_of(tmp_path)
    assert data["synth"]["root"] is None  # the same place: the stored config is unchanged
    assert ensure_synth(data) and is_synthetic(tmp_path / "synth")
    elsewhere = tmp_path / "other"
    data = data_of(tmp_path, f"data.root={elsewhere}", f"data.synth.root={elsewhere}")
    assert ensure_synth(data) and is_synthetic(elsewhere)


def test_a_missing_root_without_synth_names_the_key_and_path(tmp_path):
    with pytest.raises(TsrxError, match=r"data.root = '.*nowhere': no such folder .*train1"):
        ensure_synth({"root": str(tmp_path / "nowhere"), "synth": None})


def test_a_file_extending_a_synth_file_with_its_own_root_does_not_synthesise(tmp_path):
    (tmp_path / "e.toml").write_text(EXPERIMENT.format(root=tmp_path / "synth"))
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "e.toml"\n[data]\nroot = "{tmp_path / "real"}"\n')
    data = load_experiment(child).runs[0].config["data"]
    with pytest.raises(TsrxError, match="no such folder"):
        ensure_synth(data)


def test_tables_mark_a_run_trained_on_synthetic_data(tmp_path):
    from test_report_fixtures import result, write_run

    from tsrx.report.collect import collect
    from tsrx.report.render import to_markdown
    from tsrx.report.tables import build_report

    values = [0.5] * 4 + [20.0] * 4 + [0.6] * 4
    for head, synthetic in (("dense", True), ("mlp", False)):
        d = write_run(tmp_path / "runs", head, "avg", val={"best_acc": result(values)})
        summary = json.loads((d / "summary.json").read_text())
        (d / "summary.json").write_text(json.dumps({**summary, "synthetic_data": synthetic}))
    rep = build_report(collect(tmp_path / "runs" / "joint"), selectors=["best_acc"])
    text = to_markdown(rep)
    marked = [line for line in text.splitlines() if "SYNTHETIC data" in line]
    assert len(marked) == 1 and "dense" in marked[0], text


@pytest.mark.parametrize(
    "given,hint",
    [
        ("TextZoom/test", "this is the test/ folder; pass its parent, {tmp}/TextZoom"),
        (
            "TextZoom/test/medium",
            "this is one split folder (test/medium); pass the TextZoom folder that holds "
            "test/, {tmp}/TextZoom",
        ),
        ("TextZom", "no such folder ({tmp}/TextZom)"),
        ("elsewhere", "pass the TextZoom folder that holds test/"),
    ],
)
def test_data_pointed_inside_textzoom_says_what_to_pass(tmp_path, given, hint):
    from tsrx.engine.evaluator import evaluation_sets

    for split in ("easy", "medium", "hard"):
        (tmp_path / "TextZoom" / "test" / split).mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(TsrxError) as info:
        evaluation_sets({}, tmp_path / given)
    assert hint.format(tmp=tmp_path) in str(info.value), str(info.value)
