"""Paired statistics against scipy and by simulation (tsrx.report.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from tsrx.errors import TsrxError
from tsrx.report.stats import binom_cdf_half, compare, compare_groups, holm, mcnemar_exact


@pytest.mark.parametrize(
    "b,c",
    [(0, 0), (0, 1), (1, 0), (3, 3), (5, 0), (12, 30), (30, 12), (117, 90), (400, 455),
     (2000, 2110), (12000, 11800), (15000, 16000), (30000, 30600)],
)  # fmt: skip
def test_mcnemar_equals_scipy_binomtest_on_the_discordant_counts(b, c):
    binomtest = pytest.importorskip("scipy.stats").binomtest
    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_the_binomial_tail_is_exact_where_it_can_be_and_log_space_agrees_beyond():
    assert binom_cdf_half(2, 4) == 11 / 16
    assert binom_cdf_half(-1, 4) == 0.0 and binom_cdf_half(4, 4) == 1.0
    import tsrx.report.stats as stats

    exact = binom_cdf_half(4_900, 10_000)
    limit, stats.EXACT_LIMIT = stats.EXACT_LIMIT, 100
    try:
        assert binom_cdf_half(4_900, 10_000) == pytest.approx(exact, rel=1e-9)
    finally:
        stats.EXACT_LIMIT = limit
    with pytest.raises(TsrxError, match="b=-1"):
        mcnemar_exact(-1, 2)


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def _paired(rng, n, p_a, p_b, rho=0.5):
    """Correlated Bernoulli pairs: a shared latent makes the same images easy for both."""
    z = rng.standard_normal(n)
    from statistics import NormalDist

    qa, qb = NormalDist().inv_cdf(p_a), NormalDist().inv_cdf(p_b)
    a = rho**0.5 * z + (1 - rho) ** 0.5 * rng.standard_normal(n) < qa
    b = rho**0.5 * z + (1 - rho) ** 0.5 * rng.standard_normal(n) < qb
    return a, b


def test_the_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(1)
    a, b = _paired(rng, 600, 0.6, 0.55)
    strata = np.repeat([0, 1, 2], 200)
    one = compare([a], [b], strata, seed=7, n_boot=2000)
    two = compare([a], [b], strata, seed=7, n_boot=2000)
    other = compare([a], [b], strata, seed=8, n_boot=2000)
    assert (one.low, one.high) == (two.low, two.high)
    assert (one.low, one.high) != (other.low, other.high)
    assert one.diff == pytest.approx(a.mean() - b.mean())
    assert one.b == np.sum(a & ~b) and one.c == np.sum(~a & b)
    assert one.p == mcnemar_exact(int(one.b), int(one.c)) and one.test == "McNemar exact"


def test_the_paired_interval_covers_a_known_difference_at_the_stated_rate():
    """400 simulated test sets with true difference 0.05: the 95% interval covers it in
    95% of them, within the simulation's noise (binomial sd 1.1 points)."""
    rng = np.random.default_rng(2026)
    covered = 0
    reps = 400
    for k in range(reps):
        a, b = _paired(rng, 500, 0.60, 0.55)
        cmp = compare([a], [b], n_boot=1000, seed=k)
        covered += cmp.low <= 0.05 <= cmp.high
    assert 0.92 <= covered / reps <= 0.98


def test_seeds_and_images_together_widen_the_interval_by_the_seed_spread():
    rng = np.random.default_rng(3)
    n = 900
    base = rng.random(n)
    # three seeds per side whose accuracies differ by a few points: seed variance
    a = [base < 0.55 + d for d in (-0.04, 0.0, 0.04)]
    b = [base < 0.53 + d for d in (-0.04, 0.0, 0.04)]
    both = compare(a, b, n_boot=4000, seed=0)
    images_only = compare([a[1]], [b[1]], n_boot=4000, seed=0)
    assert both.test == "hierarchical bootstrap" and (both.seeds_a, both.seeds_b) == (3, 3)
    assert both.diff == pytest.approx(
        np.mean([x.mean() for x in a]) - np.mean([x.mean() for x in b])
    )
    assert (both.high - both.low) > 2 * (images_only.high - images_only.low)
    assert both.p > 0.05 and images_only.p < 0.05  # the seed spread swallows a 2-point gain
    assert compare(a, b, n_boot=4000, seed=0).low == both.low  # reproducible


def test_sides_on_different_images_are_refused():
    with pytest.raises(TsrxError, match="different numbers of images"):
        compare([np.ones(3, bool)], [np.ones(4, bool)])


def test_pooled_over_groups_is_the_mean_of_the_groups_differences_and_one_group_is_compare():
    rng = np.random.default_rng(5)
    n = 600
    base = rng.random(n)
    strata = np.repeat([0, 1, 2], 200)
    # two groups (heads), three seeds each: A gains 4 points in one group and 0 in the other
    a = [[base < 0.50 + d for d in (-0.02, 0.0, 0.02)], [base < 0.60 + d for d in (-0.02, 0, 0.02)]]
    b = [[base < 0.46 + d for d in (-0.02, 0.0, 0.02)], [base < 0.60 + d for d in (-0.02, 0, 0.02)]]
    pooled = compare_groups(a, b, strata, n_boot=3000, seed=1)
    per_group = [
        np.mean([x.mean() for x in a[g]]) - np.mean([x.mean() for x in b[g]]) for g in (0, 1)
    ]
    assert pooled.diff == pytest.approx(np.mean(per_group))
    assert pooled.low < pooled.diff < pooled.high and (pooled.seeds_a, pooled.seeds_b) == (6, 6)
    assert pooled.test == "hierarchical bootstrap" and pooled.n_images == n
    assert compare_groups(a, b, strata, n_boot=3000, seed=1).low == pooled.low  # reproducible
    # one group: the same draws, so the same interval as compare's seeds-then-images bootstrap
    one = compare_groups(a[:1], b[:1], strata, n_boot=3000, seed=1)
    same = compare(a[0], b[0], strata, n_boot=3000, seed=1)
    assert (one.diff, one.p) == (pytest.approx(same.diff), pytest.approx(same.p))
    assert (one.low, one.high) == (pytest.approx(same.low), pytest.approx(same.high))


@pytest.mark.slow
def test_pooled_interval_covers_a_known_difference_at_the_stated_rate():
    """Four groups, one run per side each, true pooled difference 0.03: 95% coverage (400
    simulated test sets, binomial sd 1.1 points)."""
    rng = np.random.default_rng(2026)
    covered = 0
    reps = 400
    for k in range(reps):
        pairs = [_paired(rng, 400, 0.5 + 0.05 * g, 0.47 + 0.05 * g) for g in range(4)]
        cmp = compare_groups([[x] for x, _ in pairs], [[y] for _, y in pairs], n_boot=500, seed=k)
        covered += cmp.low <= 0.03 <= cmp.high
    assert 0.92 <= covered / reps <= 0.98


def test_pooled_groups_must_match():
    with pytest.raises(TsrxError, match="same number of groups"):
        compare_groups([[np.ones(3, bool)]], [])
    with pytest.raises(TsrxError, match="at least one run"):
        compare_groups([[np.ones(3, bool)], []], [[np.ones(3, bool)], [np.ones(3, bool)]])
    with pytest.raises(TsrxError, match="same images"):
        compare_groups([[np.ones(3, bool)]], [[np.ones(4, bool)]])
