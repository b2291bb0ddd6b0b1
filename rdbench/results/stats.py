"""Significance of a difference between two runs: two-level bootstrap, or Welch's t-test.

A difference between two runs has two sources of noise: which training seeds were drawn and
which images and captions happened to be in the test split. The two-level bootstrap
(:func:`two_level_bootstrap`, in :mod:`rdbench.results.bootstrap` and re-exported here)
resamples both: each replicate draws each run's seeds with replacement (independently for the
two runs), then the test queries with replacement (the same query indices for both runs, since
both answered the same test set). It needs each seed's per-query ranks; without them, Welch's
t-test over seeds is the fallback when both runs have three seeds or more. The p-values of one
table are corrected together with Holm's step-down method (:func:`holm`).

The distributions and tests come from the libraries statisticians check their work against:
Welch's test and the t and normal distributions from ``scipy.stats``, Holm's correction from
``statsmodels.stats.multitest``. What neither offers is written here and says why: the
two-level bootstrap (:mod:`rdbench.results.bootstrap`; ``scipy.stats.bootstrap`` resamples one
level of independent observations, not seeds and then the queries both runs answered), and
Welch's result for samples without any spread, where scipy returns NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from rdbench.results.bootstrap import (  # noqa: F401  (re-exported: the one place callers import from)
    ALPHA, BOOTSTRAP_METRICS, KS, MAX_RESAMPLES, MIN_RESAMPLES, RESAMPLE_FACTOR, TEST_RECALLS, Z_80,
    Z_975, BootResult, Interval, QueryHits, auto_resamples, load_hits, paired_bootstrap,
    resamples_needed, seed_pairing, two_level_bootstrap, two_level_bootstraps,
)


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (df may be fractional):
    ``scipy.stats.t``."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return float(scipy_stats.t.cdf(t, df))


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
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    df = float(getattr(result, "df", math.nan))
    return Welch(float(result.statistic), df, min(1.0, float(result.pvalue)))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (``statsmodels``' ``multipletests``
    with ``method="holm"``: the i-th smallest of m, from 1, becomes (m - i + 1) p_(i), made
    non-decreasing and capped at 1)."""
    p = [float(v) for v in pvalues]
    if not p:
        return []
    return [float(v) for v in multipletests(p, method="holm")[1]]


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
