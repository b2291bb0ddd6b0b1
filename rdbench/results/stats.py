"""Significance of a difference between two runs: two-level bootstrap, or Welch's t-test.

A difference between two runs has two sources of noise: which training seeds were drawn and
which images and captions happened to be in the test split. The two-level bootstrap
(:func:`two_level_bootstrap`, in :mod:`rdbench.results.bootstrap` and re-exported here)
resamples both: each replicate draws each run's seeds with replacement (independently for the
two runs), then the test queries with replacement (the same query indices for both runs, since
both answered the same test set). It needs each seed's per-query ranks; without them, Welch's
t-test over seeds is the fallback when both runs have three seeds or more. The p-values of one
table are corrected together with Holm's step-down method (:func:`holm`).

scipy is not a dependency, so the Student t distribution is computed here from the regularized
incomplete beta function (a continued fraction, as in Numerical Recipes section 6.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rdbench.results.bootstrap import (  # noqa: F401  (re-exported: the one place callers import from)
    ALPHA, BOOTSTRAP_METRICS, KS, MAX_RESAMPLES, MIN_RESAMPLES, RESAMPLE_FACTOR, TEST_RECALLS, Z_80,
    Z_975, BootResult, Interval, QueryHits, auto_resamples, load_hits, paired_bootstrap,
    resamples_needed, seed_pairing, two_level_bootstrap, two_level_bootstraps,
)


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x={x} is outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    # The continued fraction converges fast only for x below the mean; use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, eps: float = 1e-15, max_iter: int = 500) -> float:
    """Modified Lentz evaluation of the incomplete beta continued fraction."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (df may be fractional)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@dataclass(frozen=True)
class Welch:
    t: float
    df: float
    p: float


def welch_ttest(a, b) -> Welch:
    """Two-sided Welch's t-test of mean(a) - mean(b); each sample needs two values or more.

    Two samples without any spread are either identical (p = 1) or certainly different
    (p = 0): the formula would divide by zero, and seeds that agree exactly are a real outcome
    (e.g. a deterministic zero-shot run).
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's t-test needs at least two values per sample")
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((v - ma) ** 2 for v in a) / (len(a) - 1) / len(a)
    vb = sum((v - mb) ** 2 for v in b) / (len(b) - 1) / len(b)
    se2 = va + vb
    if se2 == 0.0:
        return Welch(0.0 if ma == mb else math.copysign(math.inf, ma - mb), math.inf,
                     1.0 if ma == mb else 0.0)
    t = (ma - mb) / math.sqrt(se2)
    df = se2 ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    return Welch(t, df, min(1.0, 2.0 * t_cdf(-abs(t), df)))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending, the i-th smallest of m (i from 1) becomes (m - i + 1) p_(i), made
    non-decreasing by a running maximum and capped at 1.
    """
    p = [float(v) for v in pvalues]
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: p[j])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Delta:
    """Row mean minus baseline mean of one column, and how (if at all) it was tested."""

    delta: float | None
    test: str | None = None  # "bootstrap" (two-level), "welch" or None (not tested)
    significant: bool | None = None  # Holm-adjusted p < 0.05 once the table is corrected
    p: float | None = None  # unadjusted two-sided p-value
    low: float | None = None
    high: float | None = None
    why_untested: str | None = None
    p_holm: float | None = None
    se: float | None = None  # bootstrap standard error of the delta (points)
    paired_seeds: bool = False  # the bootstrap resampled both runs' seeds together


def test_kind(column: str, delta: float | None, n_values: int, n_base_values: int,
              bootstrapped: bool) -> str | None:
    """The test a Δ gets (docs/compare.md): ``bootstrap`` for a test metric whose runs both have
    per-query ranks, else ``welch`` with 3 seeds or more on both sides, else None (untested).
    Known before any resampling, so a table can count its tests first and size B by them."""
    if delta is None:
        return None
    if column in BOOTSTRAP_METRICS and bootstrapped:
        return "bootstrap"
    if n_values >= 3 and n_base_values >= 3:
        return "welch"
    return None


def choose_delta(column: str, delta: float | None, values, base_values,
                 hits: QueryHits | None, base_hits: QueryHits | None,
                 boot: dict[str, BootResult] | None) -> Delta:
    """Test one (row, column) pair with the test :func:`test_kind` names.

    ``significant`` here is the unadjusted p < 0.05; the table replaces it by Holm's.
    """
    bootstrapped = boot is not None and hits is not None and base_hits is not None
    kind = test_kind(column, delta, len(values), len(base_values), bootstrapped)
    if delta is None:
        return Delta(None, why_untested="no value")
    if kind == "bootstrap":
        r = boot[column]
        return Delta(delta, "bootstrap", r.p < ALPHA, p=r.p, low=r.low, high=r.high, se=r.se,
                     paired_seeds=r.paired_seeds)
    if kind == "welch":
        w = welch_ttest(values, base_values)
        return Delta(delta, "welch", w.p < ALPHA, p=w.p)
    if column not in BOOTSTRAP_METRICS:
        return Delta(delta, why_untested="fewer than 3 seeds and no per-query values")
    return Delta(delta, why_untested="per-query ranks unavailable")
