"""Measured figures live in one place (issue 26: three quickstart times in three files, and two
accuracies of the mini study's stand-in CRNN). The README holds them; the other files point
there, so a re-measurement is one edit."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a duration ("2 min 31 s", "About 3 minutes", "~2 minutes") or an accuracy ("26% accuracy",
# "0.33 accuracy")
TIME = re.compile(r"\d+\s*min(?:ute)?s?\b", re.I)
ACCURACY = re.compile(r"\d+(?:\.\d+)?%?\s+accuracy", re.I)


def read(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def test_quickstart_time_is_written_only_in_the_readme():
    readme = read("README.md")
    assert (
        len(re.findall(r"`time \./dev\.sh quickstart` took\s+\*\*\d+ min \d+ s\*\*", readme)) == 1
    )
    for name in ("docs/engine.md", "experiments/quickstart.toml"):
        text = read(name)
        quick = [line for line in text.splitlines() if "quickstart" in line.lower()]
        assert not [line for line in quick if TIME.search(line)], name
        assert 'README.md ("Two' in text or 'README.md, "Two commands"' in text, name
    assert not TIME.search(read("experiments/quickstart.toml"))


def test_stand_in_crnn_accuracy_is_written_only_in_the_readme():
    readme = read("README.md")
    assert len(re.findall(r"stand-in CRNN, \d\.\d+ accuracy", readme)) == 1
    for name in ("docs/study.md", "experiments/study_mini/rec_pretrain.toml"):
        text = read(name)
        assert not ACCURACY.search(text), name
        assert "Second: the whole study" in " ".join(text.replace("#", " ").split()), name
