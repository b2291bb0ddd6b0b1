"""Significance of a difference between two runs: two-level bootstrap, or Welch's t-test.

A difference between two runs has two sources of noise: which training seeds were drawn and
which images and captions happened to be in the test split. The two-level bootstrap
(:func:`two_level_bootstrap`) resamples both: each replicate draws each run's seeds with
replacement (independently for the two runs), then the test queries with replacement (the same
query indices for both runs, since both answered the same test set). It needs each seed's
per-query ranks; without them, Welch's t-test over seeds is the fallback when both runs have
three seeds or more. The p-values of one table are corrected together with Holm's step-down
method (:func:`holm`).

scipy is not a dependency, so the Student t distribution is computed here from the regularized
incomplete beta function (a continued fraction, as in Numerical Recipes section 6.4).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

KS = (1, 5, 10)
#: The test metrics a bootstrap can recompute from per-query ranks.
TEST_RECALLS = tuple(f"test/{d}_R@{k}" for d in ("i2t", "t2i") for k in KS)
BOOTSTRAP_METRICS = (*TEST_RECALLS, "test/mR")
ALPHA = 0.05


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


@dataclass(frozen=True)
class QueryHits:
    """Seed-averaged hit indicators per test query: ``i2t`` (3, images), ``t2i`` (3, captions).

    Row k is K = 1, 5, 10; the mean over queries of these equals the seed-mean recall.
    ``seed_i2t`` (seeds, 3, images) and ``seed_t2i`` keep each seed's hits for the two-level
    bootstrap (None when built from averages only).
    """

    i2t: np.ndarray
    t2i: np.ndarray
    seeds: int
    seed_i2t: np.ndarray | None = None
    seed_t2i: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.i2t.shape[1], self.t2i.shape[1]


def _ranks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError("is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"is not readable as JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("i2t", "t2i")):
        raise ValueError("lacks the 'i2t' and 't2i' rank lists")
    try:
        return tuple(np.asarray(data[k], dtype=np.int64) for k in ("i2t", "t2i"))
    except (TypeError, ValueError):
        raise ValueError("has ranks that are not integers") from None


def load_hits(paths) -> QueryHits:
    """Average the hit indicators of the rank files ``paths`` (one per seed of a run).

    Raises ValueError naming the first unusable file: a bootstrap over a partial set of seeds
    would test a different number than the table shows.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("no rank files")
    per_seed, shape = [], None
    for path in paths:
        try:
            i2t, t2i = _ranks(path)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if shape is not None and (len(i2t), len(t2i)) != shape:
            raise ValueError(f"{path}: {len(i2t)} image / {len(t2i)} caption queries, "
                             f"other seeds have {shape[0]} / {shape[1]}")
        shape = (len(i2t), len(t2i))
        hits = [np.stack([(r < k) for k in KS]).astype(np.float64) for r in (i2t, t2i)]
        per_seed.append(hits)
    seed_i2t, seed_t2i = (np.stack([h[j] for h in per_seed]) for j in (0, 1))
    return QueryHits(seed_i2t.mean(axis=0), seed_t2i.mean(axis=0), len(paths), seed_i2t, seed_t2i)


@dataclass(frozen=True)
class Interval:
    delta: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0.0 or self.high < 0.0


def paired_bootstrap(a: QueryHits, b: QueryHits, n_boot: int = 1000, seed: int = 0,
                     chunk: int = 100) -> dict[str, Interval]:
    """95% percentile intervals of metric(a) - metric(b) in points, resampling queries in pairs.

    Image queries and caption queries are resampled independently (they are separate query
    sets); each replicate's mR is the mean of its six resampled recalls, as mR itself is.
    """
    if a.shape != b.shape:
        raise ValueError(f"runs answered different test sets ({a.shape[0]} / {a.shape[1]} vs "
                         f"{b.shape[0]} / {b.shape[1]} image / caption queries)")
    rng = np.random.default_rng(seed)
    diffs = [a.i2t - b.i2t, a.t2i - b.t2i]
    reps = []
    # Chunks bound memory: a full (B, captions) index matrix for RSICD would be ~44 MB per K.
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        idx = [rng.integers(0, d.shape[1], size=(n, d.shape[1])) for d in diffs]
        reps.append(np.concatenate([d[:, i].mean(axis=-1) for d, i in zip(diffs, idx)]) * 100.0)
    replicates = np.concatenate(reps, axis=1)  # (6, n_boot)
    replicates = np.vstack([replicates, replicates.mean(axis=0, keepdims=True)])
    point = np.concatenate([d.mean(axis=-1) for d in diffs]) * 100.0
    point = np.append(point, point.mean())
    out = {}
    for name, p, rep in zip(BOOTSTRAP_METRICS, point, replicates):
        low, high = np.percentile(rep, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        out[name] = Interval(float(p), float(low), float(high))
    return out


#: z quantiles for the minimum detectable difference: two-sided alpha 0.05 and 80% power.
Z_975 = 1.959963984540054
Z_80 = 0.8416212335729143


@dataclass(frozen=True)
class BootResult:
    """One metric's two-level bootstrap: point delta, 95% percentile interval, two-sided p, SE."""

    delta: float
    low: float
    high: float
    p: float
    se: float

    @property
    def mdd(self) -> float:
        """Minimum detectable difference at 80% power and two-sided alpha 0.05."""
        return (Z_975 + Z_80) * self.se


def _seed_weights(rng, n_seeds: int, n: int) -> np.ndarray:
    """(n, n_seeds) weights of seeds drawn with replacement: counts / n_seeds."""
    return rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n) / n_seeds


def two_level_bootstrap(a: QueryHits, b: QueryHits, n_boot: int = 1000, seed: int = 0,
                        chunk: int = 100) -> dict[str, BootResult]:
    """Two-level bootstrap of metric(a) - metric(b) in points, for the seven test metrics.

    Each replicate draws a's seeds and b's seeds with replacement (independently), then the
    image queries and the caption queries with replacement (independently of each other, the
    same indices for a and b: paired by query), and takes the difference of the resampled
    means; mR is the mean of the six resampled recalls. The interval is the 95% percentile
    interval; the p-value is 2 min(P(d* <= 0), P(d* >= 0)) clipped to [1/B, 1]; ``se`` is the
    standard deviation of the replicates. Resampling is done with count weights (multinomial
    draws), so each chunk of replicates is a few matrix products.
    """
    if a.shape != b.shape:
        raise ValueError(f"runs answered different test sets ({a.shape[0]} / {a.shape[1]} vs "
                         f"{b.shape[0]} / {b.shape[1]} image / caption queries)")
    if n_boot < 1:
        raise ValueError("the bootstrap needs at least one replicate")
    sa = [a.seed_i2t, a.seed_t2i] if a.seed_i2t is not None else [a.i2t[None], a.t2i[None]]
    sb = [b.seed_i2t, b.seed_t2i] if b.seed_i2t is not None else [b.i2t[None], b.t2i[None]]
    rng = np.random.default_rng(seed)
    reps = []
    # Chunks bound memory: (chunk, 3, captions) floats per direction.
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        wa, wb = _seed_weights(rng, len(sa[0]), n), _seed_weights(rng, len(sb[0]), n)
        part = []
        for ha, hb in zip(sa, sb):  # (seeds, 3, queries) each
            q = ha.shape[-1]
            cq = rng.multinomial(q, np.full(q, 1.0 / q), size=n) / q  # (n, queries)
            diff = np.einsum("bs,skq->bkq", wa, ha) - np.einsum("bs,skq->bkq", wb, hb)
            part.append(np.einsum("bkq,bq->kb", diff, cq))
        reps.append(np.concatenate(part) * 100.0)
    replicates = np.concatenate(reps, axis=1)  # (6, n_boot)
    replicates = np.vstack([replicates, replicates.mean(axis=0, keepdims=True)])
    point = np.concatenate([(ha.mean(axis=0) - hb.mean(axis=0)).mean(axis=-1)
                            for ha, hb in zip(sa, sb)]) * 100.0
    point = np.append(point, point.mean())
    out = {}
    # Replicates equal to the point up to rounding count as ties with 0 when the point is 0.
    tol = 1e-9
    for name, p, rep in zip(BOOTSTRAP_METRICS, point, replicates):
        low, high = np.percentile(rep, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        tail = min(np.mean(rep <= tol), np.mean(rep >= -tol))
        pval = float(np.clip(2.0 * tail, 1.0 / n_boot, 1.0))
        se = float(rep.std(ddof=1)) if n_boot > 1 else 0.0
        out[name] = BootResult(float(p), float(low), float(high), pval, se)
    return out


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


def choose_delta(column: str, delta: float | None, values, base_values,
                 hits: QueryHits | None, base_hits: QueryHits | None,
                 boot: dict[str, BootResult] | None) -> Delta:
    """Pick the test for one (row, column) pair following the rules in docs/compare.md.

    ``significant`` here is the unadjusted p < 0.05; the table replaces it by Holm's.
    """
    if delta is None:
        return Delta(None, why_untested="no value")
    if column in BOOTSTRAP_METRICS and boot is not None and hits is not None and base_hits is not None:
        r = boot[column]
        return Delta(delta, "bootstrap", r.p < ALPHA, p=r.p, low=r.low, high=r.high, se=r.se)
    if len(values) >= 3 and len(base_values) >= 3:
        w = welch_ttest(values, base_values)
        return Delta(delta, "welch", w.p < ALPHA, p=w.p)
    if column not in BOOTSTRAP_METRICS:
        return Delta(delta, why_untested="fewer than 3 seeds and no per-query values")
    return Delta(delta, why_untested="per-query ranks unavailable")
