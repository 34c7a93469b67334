"""Checkpoint selectors scoring evaluation results."""

from __future__ import annotations

import math

import pytest

from tsrx.errors import TsrxError
from tsrx.registry import SELECTORS


def result(acc, psnr, ssim, hard_acc=0.3):
    return {
        "protocol": "textzoom",
        "splits": {
            "easy": {"n": 2, "acc": 0.9, "psnr": 25.0, "ssim": 0.8},
            "hard": {"n": 2, "acc": hard_acc, "psnr": 19.0, "ssim": 0.6},
        },
        "average": {"n": 4, "acc": acc, "psnr": psnr, "ssim": ssim},
    }


def build(item):
    return SELECTORS.build({"type": item} if isinstance(item, str) else item, "train.selectors")


def best_of(selector, results):
    return max(range(len(results)), key=lambda i: selector.score(results[i]))


def test_builtin_selectors_names_files_and_choice():
    runs = [result(0.5, 21.0, 0.70), result(0.6, 20.5, 0.72), result(0.55, 21.5, 0.71)]
    acc, psnr = build("best_acc"), build("best_psnr")
    assert (acc.name, acc.filename) == ("best_acc", "best_acc_model.pth")
    assert (psnr.name, psnr.filename) == ("best_psnr", "best_psnr_model.pth")
    assert best_of(acc, runs) == 1 and best_of(psnr, runs) == 2


def test_generic_best_ssim_is_one_table():
    sel = build({"type": "best", "metric": "ssim"})
    assert (sel.name, sel.filename) == ("best_ssim", "best_ssim_model.pth")
    assert sel.score(result(0.5, 21.0, 0.71)) == pytest.approx(0.71)


def test_min_mode_negates_and_split_reads_one_split():
    sel = build(
        {
            "type": "best",
            "metric": "acc",
            "split": "hard",
            "mode": "min",
            "filename": "worst_hard.pth",
        }
    )
    assert sel.name == "best_hard_acc" and sel.filename == "worst_hard.pth"
    assert sel.score(result(0.5, 21, 0.7, hard_acc=0.25)) == pytest.approx(-0.25)


def test_missing_value_never_wins():
    sel = build("best_acc")
    assert sel.score(result(None, 21.0, 0.7)) == -math.inf
    assert sel.score(result(float("nan"), 21.0, 0.7)) == -math.inf


def test_unknown_metric_or_split_is_named():
    with pytest.raises(TsrxError, match="no metric 'lpips'.*n, acc, psnr, ssim"):
        build({"type": "best", "metric": "lpips"}).score(result(0.5, 21, 0.7))
    with pytest.raises(TsrxError, match="no split 'medium'.*easy, hard"):
        build({"type": "best", "metric": "acc", "split": "medium"}).score(result(0.5, 21, 0.7))


def test_bad_options_are_config_errors():
    with pytest.raises(TsrxError, match="train.selectors.mode"):
        build({"type": "best", "metric": "acc", "mode": "largest"})
    with pytest.raises(TsrxError, match="plain file name"):
        build({"type": "best", "metric": "acc", "filename": "../x.pth"})
