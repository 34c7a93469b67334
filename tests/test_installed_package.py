"""plugins/installed_package.py: a wheel's folder, or the judge's install hint; its version."""

from __future__ import annotations

import pytest
import torch

from tsrx.errors import TsrxError
from tsrx.models.text import ctc_best_path
from tsrx_builtin.installed_package import distribution_version, package_dir


def test_a_missing_package_raises_the_judges_install_hint():
    with pytest.raises(TsrxError, match="pip install 'no-such-judge-wheel'"):
        package_dir("no_such_judge_wheel", "pip install 'no-such-judge-wheel'")


def test_an_installed_package_and_its_version():
    assert (package_dir("tsrx", "unused") / "checkpoint.py").is_file()
    assert torch.__version__.startswith(distribution_version("torch"))
    assert distribution_version("no-such-judge-wheel") == "?"


def test_best_path_merges_repeats_drops_blanks_and_keeps_multi_character_symbols():
    # steps: a a <blank> a "ch" "ch" -> "a" "a" "ch", scores of the first of each run
    probs = torch.zeros(1, 6, 3)
    for t, (k, p) in enumerate([(1, 0.9), (1, 0.8), (0, 0.7), (1, 0.6), (2, 0.5), (2, 0.4)]):
        probs[0, t, k] = p
    got = ctc_best_path(probs, ["a", "ch"])
    assert got.texts == ["aach"]
    assert got.scores == [pytest.approx([0.9, 0.6, 0.5])]
