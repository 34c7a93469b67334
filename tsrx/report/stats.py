"""Paired comparisons of accuracy on the same images: bootstrap intervals, exact McNemar, Holm.

Two evaluations of the same test images are paired: image i is read right or wrong by each.
What differs between them is carried by the discordant images (``b``: right in A only, ``c``:
right in B only), so:

- **Exact McNemar** (one run per side): under "no difference" each discordant image is A's
  with probability 1/2, so ``p = min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c)))`` (two-sided;
  equal to ``scipy.stats.binomtest(b, b + c).pvalue``, checked in tests). Exact binomial tail:
  integer arithmetic up to ``EXACT_LIMIT`` discordant images, log-space beyond.
- **Paired bootstrap** of the accuracy difference: images are resampled with replacement
  within each split (split sizes fixed, as in the test set), the same draw for both sides.
  Images are summed up by their *pattern* (which sides read them right), so a resample is one
  multinomial draw over at most ``2^runs`` patterns: exact, and independent of the image count.
  95% percentile interval; seeded (``numpy.random.default_rng(seed)``), so reproducible.
- **Seeds and images together** (several runs per side, differing only in seed): a two-stage
  (hierarchical) bootstrap. Each replicate resamples each side's seeds with replacement, then
  the images (one draw shared by every run: they stay paired), and takes the difference of the
  seed-mean accuracies. Its interval carries both sources of variance; its p-value is the
  bootstrap's two-sided tail ``min(1, 2 * min(P*(d <= 0), P*(d >= 0)))`` (with the +1 correction).
  With 3 seeds per side the seed stage resamples from 3 values, which understates the seed
  variance by about (S-1)/S: the interval is a lower bound on the uncertainty.
- **Pooled over groups** (``compare_groups``: A against B in each of G groups, e.g. the
  combiner avg against uncertainty under each of 4 heads, seeds inside each): the difference
  is the mean over the groups of the seed-mean differences, each group weighting equally.
  Each replicate resamples the images once (shared by every run of every group), then, in
  each group and on each side, that group's seeds; the groups themselves are fixed, so the
  interval is about these G groups (the four heads that were run), not a population of them.
- **Holm** (step-down) adjusts a family of p-values for multiple testing.

numpy only; nothing here imports torch or scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsrx.errors import TsrxError

EXACT_LIMIT = 20_000
N_BOOT = 10_000
LEVEL = 0.95
ALPHA = 0.05


def binom_cdf_half(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= k), exactly (integers) or in log space for large ``n``."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= EXACT_LIMIT:
        term, total = 1, 1  # C(n, 0)
        for i in range(k):
            term = term * (n - i) // (i + 1)
            total += term
        return total / (1 << n)  # int / int is correctly rounded in Python
    log_terms = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in range(k + 1)])
        - n * math.log(2.0)
    )
    top = log_terms.max()
    return float(min(1.0, math.exp(top) * np.exp(log_terms - top).sum()))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c``."""
    if b < 0 or c < 0:
        raise TsrxError(f"McNemar: discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binom_cdf_half(min(b, c), n))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def _patterns(columns: np.ndarray, strata: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per stratum: (distinct patterns (P, R) as 0/1, their counts (P,))."""
    runs = columns.shape[1]
    if runs > 62:
        raise TsrxError(f"compare: at most 62 runs at once, got {runs}")
    codes = columns.astype(np.int64) @ (np.int64(1) << np.arange(runs, dtype=np.int64))
    out = []
    for s in np.unique(strata):
        kinds, counts = np.unique(codes[strata == s], return_counts=True)
        pats = (kinds[:, None] >> np.arange(runs, dtype=np.int64)) & 1
        out.append((pats, counts))
    return out


def _image_bootstrap(
    columns: np.ndarray, strata: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(n_boot, runs) accuracies of every run on the same resampled images (within strata)."""
    correct = np.zeros((n_boot, columns.shape[1]), np.int64)
    for pats, counts in _patterns(columns, strata):
        draws = rng.multinomial(int(counts.sum()), counts / counts.sum(), size=n_boot)
        correct += draws @ pats
    acc: np.ndarray = correct / columns.shape[0]
    return acc


@dataclass
class Comparison:
    """A minus B in accuracy on the same images, with its uncertainty."""

    acc_a: float
    acc_b: float
    diff: float
    low: float
    high: float
    p: float
    test: str  # "McNemar exact" or "hierarchical bootstrap"
    n_images: int
    seeds_a: int = 1
    seeds_b: int = 1
    b: float | None = None  # images right in A only (mean over seed pairs with seeds)
    c: float | None = None  # images right in B only
    p_holm: float | None = None
    n_boot: int = N_BOOT
    seed: int = 0
    level: float = LEVEL
    notes: list[str] = field(default_factory=list)

    @property
    def significant(self) -> bool:
        p = self.p_holm if self.p_holm is not None else self.p
        return p < ALPHA

    def as_dict(self) -> dict[str, Any]:
        return {
            "acc_a": self.acc_a,
            "acc_b": self.acc_b,
            "diff": self.diff,
            "ci": [self.low, self.high],
            "level": self.level,
            "p": self.p,
            "p_holm": self.p_holm,
            "test": self.test,
            "discordant": {"a_only": self.b, "b_only": self.c},
            "n_images": self.n_images,
            "seeds": [self.seeds_a, self.seeds_b],
            "bootstrap": {"replicates": self.n_boot, "seed": self.seed},
        }


def _interval_and_p(diffs: np.ndarray, level: float) -> tuple[float, float, float]:
    """The percentile interval of bootstrapped differences and the two-sided bootstrap
    p-value of "no difference" (each tail counted with the observed sample, so never 0)."""
    tail = (1 - level) / 2
    low, high = (float(v) for v in np.quantile(diffs, [tail, 1 - tail]))
    below = (np.sum(diffs <= 0) + 1) / (len(diffs) + 1)
    above = (np.sum(diffs >= 0) + 1) / (len(diffs) + 1)
    return low, high, float(min(1.0, 2 * min(below, above)))


def compare(
    a: list[np.ndarray],
    b: list[np.ndarray],
    strata: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Comparison:
    """Accuracy of A minus B: ``a`` and ``b`` hold one boolean per image per run (seed).

    One run per side: exact McNemar and a paired bootstrap over images. Several runs on either
    side: a two-stage bootstrap over seeds, then images (module docstring).
    """
    if not a or not b:
        raise TsrxError("compare: each side needs at least one run's per-image correctness")
    n = len(a[0])
    if any(len(x) != n for x in (*a, *b)):
        raise TsrxError(
            "compare: the two sides were evaluated on different numbers of images "
            f"({sorted({len(x) for x in (*a, *b)})}); a paired comparison needs the same images"
        )
    if n == 0:
        raise TsrxError("compare: no images to compare")
    strata = np.zeros(n, np.int64) if strata is None else np.asarray(strata)
    columns = np.stack([np.asarray(x, bool) for x in (*a, *b)], axis=1)
    sa, sb = len(a), len(b)
    acc = columns.mean(axis=0)
    acc_a, acc_b = float(acc[:sa].mean()), float(acc[sa:].mean())
    rng = np.random.default_rng(seed)
    boot_acc = _image_bootstrap(columns, strata, n_boot, rng)
    if sa == 1 and sb == 1:
        diffs = boot_acc[:, 0] - boot_acc[:, 1]
    else:
        pick_a = rng.integers(0, sa, size=(n_boot, sa))
        pick_b = sa + rng.integers(0, sb, size=(n_boot, sb))
        rows = np.arange(n_boot)[:, None]
        diffs = boot_acc[rows, pick_a].mean(axis=1) - boot_acc[rows, pick_b].mean(axis=1)
    low, high, p_boot = _interval_and_p(diffs, level)
    pair_b = [
        float(np.sum(columns[:, i] & ~columns[:, sa + j])) for i in range(sa) for j in range(sb)
    ]
    pair_c = [
        float(np.sum(~columns[:, i] & columns[:, sa + j])) for i in range(sa) for j in range(sb)
    ]
    if sa == 1 and sb == 1:
        p, test = mcnemar_exact(int(pair_b[0]), int(pair_c[0])), "McNemar exact"
    else:
        p, test = p_boot, "hierarchical bootstrap"
    return Comparison(
        acc_a,
        acc_b,
        acc_a - acc_b,
        low,
        high,
        p,
        test,
        n,
        sa,
        sb,
        float(np.mean(pair_b)),
        float(np.mean(pair_c)),
        n_boot=n_boot,
        seed=seed,
        level=level,
    )


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def compare_groups(
    a: list[list[np.ndarray]],
    b: list[list[np.ndarray]],
    strata: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> Comparison:
    """A minus B pooled over groups (module docstring): ``a[g]`` and ``b[g]`` hold group g's
    runs (seeds) on each side, one boolean per image per run, all on the same images."""
    if not a or len(a) != len(b):
        raise TsrxError(
            f"compare_groups: both sides need the same number of groups (>= 1), got {len(a)} "
            f"and {len(b)}"
        )
    if any(not runs for runs in (*a, *b)):
        raise TsrxError("compare_groups: every group needs at least one run on each side")
    flat = [np.asarray(x, bool) for g in range(len(a)) for x in (*a[g], *b[g])]
    n = len(flat[0])
    if n == 0 or any(len(x) != n for x in flat):
        raise TsrxError(
            "compare_groups: every run must hold the same images "
            f"(image counts {sorted({len(x) for x in flat})})"
        )
    strata = np.zeros(n, np.int64) if strata is None else np.asarray(strata)
    columns = np.stack(flat, axis=1)
    acc = columns.mean(axis=0)
    index_a, index_b, start = [], [], 0
    for ga, gb in zip(a, b):
        index_a.append(np.arange(start, start + len(ga)))
        index_b.append(np.arange(start + len(ga), start + len(ga) + len(gb)))
        start += len(ga) + len(gb)
    acc_a = float(np.mean([acc[i].mean() for i in index_a]))
    acc_b = float(np.mean([acc[i].mean() for i in index_b]))
    rng = np.random.default_rng(seed)
    boot_acc = _image_bootstrap(columns, strata, n_boot, rng)
    rows = np.arange(n_boot)[:, None]
    diffs = np.zeros(n_boot)
    for ia, ib in zip(index_a, index_b):
        pick_a = ia[rng.integers(0, len(ia), size=(n_boot, len(ia)))]
        pick_b = ib[rng.integers(0, len(ib), size=(n_boot, len(ib)))]
        diffs += boot_acc[rows, pick_a].mean(axis=1) - boot_acc[rows, pick_b].mean(axis=1)
    diffs /= len(a)
    low, high, p_boot = _interval_and_p(diffs, level)
    pair_b = [
        float(np.sum(columns[:, i] & ~columns[:, j]))
        for ia, ib in zip(index_a, index_b)
        for i in ia
        for j in ib
    ]
    pair_c = [
        float(np.sum(~columns[:, i] & columns[:, j]))
        for ia, ib in zip(index_a, index_b)
        for i in ia
        for j in ib
    ]
    return Comparison(
        acc_a,
        acc_b,
        acc_a - acc_b,
        low,
        high,
        p_boot,
        "hierarchical bootstrap",
        n,
        sum(len(g) for g in a),
        sum(len(g) for g in b),
        float(np.mean(pair_b)),
        float(np.mean(pair_c)),
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
