"""Bootstraps over per-query hits: the two-level bootstrap behind ``rdbench compare --baseline``.

A difference between two runs has two sources of noise: which training seeds were drawn and
which images and captions happened to be in the test split. The two-level bootstrap
(:func:`two_level_bootstrap`) resamples both. Its smallest attainable p is 1/B, so a table of m
tests corrected with Holm's method (whose first threshold is alpha/m) needs B well above m/alpha
before any difference can be declared at all: :func:`auto_resamples` picks that B. With tens of
thousands of replicates per table, the resampling is organised around one shared draw of query
counts per chunk (:func:`two_level_bootstraps`): every row of a table answered the same test
queries, so the counts are drawn once and applied to every run with one matrix product, rather
than drawn again for every pair. :mod:`rdbench.results.stats` re-exports everything here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import norm as scipy_norm

KS = (1, 5, 10)
#: The test metrics a bootstrap can recompute from per-query ranks.
TEST_RECALLS = tuple(f"test/{d}_R@{k}" for d in ("i2t", "t2i") for k in KS)
BOOTSTRAP_METRICS = (*TEST_RECALLS, "test/mR")
ALPHA = 0.05
#: Default resamples: 1/B is at most alpha / (RESAMPLE_FACTOR * m) for m tests, within the bounds.
RESAMPLE_FACTOR = 20
MIN_RESAMPLES = 1000
#: About 20 s for a 16-row table of 5 seeds on RSITMD's test split on 2 CPU cores (docs/compare.md).
MAX_RESAMPLES = 100_000


def resamples_needed(n_tests: int) -> int:
    """ceil(20 m / alpha): the B whose smallest p, 1/B, is a twentieth of alpha/m."""
    return math.ceil(RESAMPLE_FACTOR * max(0, n_tests) / ALPHA)


def auto_resamples(n_tests: int) -> int:
    """B = max(1000, ceil(20 m / alpha)) capped at :data:`MAX_RESAMPLES`, for m = ``n_tests``.

    Holm's first threshold is alpha/m; a bootstrap p cannot go below 1/B, so with B < m/alpha no
    test of the table could ever be significant. Twenty times that leaves the smallest p a
    twentieth of the threshold, so that a clear difference is declared as such.
    """
    return int(min(MAX_RESAMPLES, max(MIN_RESAMPLES, resamples_needed(n_tests))))


@dataclass(frozen=True)
class QueryHits:
    """Seed-averaged hit indicators per test query: ``i2t`` (3, images), ``t2i`` (3, captions).

    Row k is K = 1, 5, 10; the mean over queries of these equals the seed-mean recall.
    ``seed_i2t`` (seeds, 3, images) and ``seed_t2i`` keep each seed's hits for the two-level
    bootstrap (None when built from averages only); ``seed_ids`` names the training seed of each
    (None when unknown), so that two runs trained at the same seeds can be resampled by seed.
    """

    i2t: np.ndarray
    t2i: np.ndarray
    seeds: int
    seed_i2t: np.ndarray | None = None
    seed_t2i: np.ndarray | None = None
    seed_ids: tuple[int, ...] | None = None

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


def load_hits(paths, seed_ids=None) -> QueryHits:
    """Average the hit indicators of the rank files ``paths`` (one per seed of a run);
    ``seed_ids``, when given, are the training seeds of those files, in the same order.

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
    ids = None
    if seed_ids is not None:
        ids = tuple(int(s) for s in seed_ids)
        if len(ids) != len(paths):
            raise ValueError(f"{paths[0]}: {len(ids)} seed numbers for {len(paths)} rank files")
    return QueryHits(seed_i2t.mean(axis=0), seed_t2i.mean(axis=0), len(paths), seed_i2t, seed_t2i, ids)


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


#: z quantiles for the minimum detectable difference (two-sided alpha 0.05 and 80% power:
#: (z_{1-alpha/2} + z_{power}) x SE, the normal-approximation power formula), from scipy.
Z_975 = float(scipy_norm.ppf(1 - ALPHA / 2))
Z_80 = float(scipy_norm.ppf(0.80))


@dataclass(frozen=True)
class BootResult:
    """One metric's two-level bootstrap: point delta, 95% percentile interval, two-sided p, SE;
    ``paired_seeds`` when the two runs' seeds were resampled together (:func:`seed_pairing`)."""

    delta: float
    low: float
    high: float
    p: float
    se: float
    paired_seeds: bool = False

    @property
    def mdd(self) -> float:
        """Minimum detectable difference at 80% power and two-sided alpha 0.05."""
        return (Z_975 + Z_80) * self.se


def _draw_counts(rng, k: int, n: int) -> np.ndarray:
    """(n, k) counts of k items drawn with replacement, one row per replicate (a multinomial).

    Drawn as indices and counted with one ``bincount``: several times faster than
    ``rng.multinomial``, which draws k binomials per row.
    """
    idx = rng.integers(0, k, size=(n, k), dtype=np.int32 if n * k < 2 ** 31 else np.int64)
    idx += np.arange(n, dtype=idx.dtype)[:, None] * k
    return np.bincount(idx.ravel(), minlength=n * k).reshape(n, k)


def _seed_weights(rng, n_seeds: int, n: int) -> np.ndarray:
    """(n, n_seeds) weights of seeds drawn with replacement: counts / n_seeds."""
    return _draw_counts(rng, n_seeds, n) / n_seeds


def _query_counts(rng, q: int, n: int) -> np.ndarray:
    """(n, q) counts of the q queries drawn with replacement, as float32: counts and their sums
    over 0/1 hits are small integers, exact in float32, which halves the matrix products' cost."""
    return _draw_counts(rng, q, n).astype(np.float32)


def seed_pairing(a: QueryHits, b: QueryHits) -> np.ndarray | None:
    """For each of b's seeds, the index of a's seed with the same number, when the two runs
    trained exactly the same seed numbers (each once); else None.

    A training seed fixes more than noise in one run: in rdbench it fixes the order of the
    training batches, the augmentations and the initial random state, the same for every run of
    a suite. Two runs at seed s thus share part of their luck, as two runs scored on the same
    test query share its difficulty. Resampling the seeds of both runs together (a paired, or
    blocked, design: Bouthillier et al., MLSys 2021, "Accounting for variance in machine learning
    benchmarks") removes that shared part from the difference; when the runs share nothing it
    leaves the variance as it was. Runs with different seed sets are resampled independently.
    """
    if a.seed_ids is None or b.seed_ids is None or len(a.seed_ids) != len(b.seed_ids):
        return None
    if len(set(a.seed_ids)) != len(a.seed_ids) or set(a.seed_ids) != set(b.seed_ids):
        return None
    where = {s: i for i, s in enumerate(a.seed_ids)}
    return np.array([where[s] for s in b.seed_ids])


def _per_seed(h: QueryHits) -> list[np.ndarray]:
    """Per-seed hits (seeds, 3, queries) per direction; one averaged "seed" when none are kept."""
    return [h.seed_i2t, h.seed_t2i] if h.seed_i2t is not None else [h.i2t[None], h.t2i[None]]


def two_level_bootstraps(pairs, n_boot: int = 1000, seed: int = 0,
                         chunk: int = 1000) -> list[dict[str, BootResult]]:
    """:func:`two_level_bootstrap` of every ``(a, b)`` pair, sharing the query draws.

    Each pair gets exactly what :func:`two_level_bootstrap` would give it alone: the query
    counts come from a generator seeded with ``seed`` (the same for every pair of one test-set
    size) and each pair's seed draws from its own generator seeded from ``seed``, so a pair's
    result depends on ``seed`` and its own hits only, never on which other rows a table has.
    Runs are stacked into one (queries, seeds x 3) matrix per direction, so each chunk of
    replicates costs one draw of counts and one matrix product for the whole table.
    """
    if n_boot < 1:
        raise ValueError("the bootstrap needs at least one replicate")
    pairs = list(pairs)
    for a, b in pairs:
        if a.shape != b.shape:
            raise ValueError(f"runs answered different test sets ({a.shape[0]} / {a.shape[1]} vs "
                             f"{b.shape[0]} / {b.shape[1]} image / caption queries)")
    out: list = [None] * len(pairs)
    for shape in dict.fromkeys(a.shape for a, _ in pairs):
        group = [i for i, (a, _) in enumerate(pairs) if a.shape == shape]
        results = _bootstrap_group([pairs[i] for i in group], shape, n_boot, seed, chunk)
        for i, result in zip(group, results):
            out[i] = result
    return out


def _bootstrap_group(pairs, shape, n_boot: int, seed: int, chunk: int) -> list[dict[str, BootResult]]:
    runs = list({id(h): h for pair in pairs for h in pair}.values())
    where = {}  # id(run) -> (first column, seeds) in the stacked matrices
    stacked: list[list[np.ndarray]] = [[], []]
    col = 0
    for h in runs:
        seeds = _per_seed(h)
        for d in (0, 1):
            stacked[d].append(seeds[d].reshape(-1, shape[d]))  # (seeds * 3, queries), seed-major
        where[id(h)] = (col, len(seeds[0]))
        col += 3 * len(seeds[0])
    hits_t = [np.ascontiguousarray(np.concatenate(s).T, dtype=np.float32) for s in stacked]
    query_rng = np.random.default_rng(seed)
    seed_rngs = [np.random.default_rng([seed, 1]) for _ in pairs]
    replicates = [np.empty((6, n_boot)) for _ in pairs]
    matches = [seed_pairing(a, b) for a, b in pairs]
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        # (n, columns): each run's per-seed recall sums under this chunk's query counts.
        sums = [(_query_counts(query_rng, shape[d], n) @ hits_t[d]).astype(np.float64) / shape[d]
                for d in (0, 1)]
        for (a, b), rng, reps, match in zip(pairs, seed_rngs, replicates, matches):
            (ca, na), (cb, nb) = where[id(a)], where[id(b)]
            wa = _seed_weights(rng, na, n)
            wb = wa[:, match] if match is not None else _seed_weights(rng, nb, n)
            for d in (0, 1):
                ra = np.einsum("ns,nsk->kn", wa, sums[d][:, ca:ca + 3 * na].reshape(n, na, 3))
                rb = np.einsum("ns,nsk->kn", wb, sums[d][:, cb:cb + 3 * nb].reshape(n, nb, 3))
                reps[3 * d:3 * d + 3, start:start + n] = (ra - rb) * 100.0
    return [_results(a, b, reps, n_boot, match is not None) for (a, b), reps, match in zip(pairs, replicates, matches)]


def _results(a: QueryHits, b: QueryHits, replicates: np.ndarray, n_boot: int,
             paired_seeds: bool = False) -> dict[str, BootResult]:
    replicates = np.vstack([replicates, replicates.mean(axis=0, keepdims=True)])
    point = np.concatenate([(ha.mean(axis=0) - hb.mean(axis=0)).mean(axis=-1)
                            for ha, hb in zip(_per_seed(a), _per_seed(b))]) * 100.0
    point = np.append(point, point.mean())
    out = {}
    # Replicates equal to the point up to rounding count as ties with 0 when the point is 0.
    tol = 1e-9
    for name, p, rep in zip(BOOTSTRAP_METRICS, point, replicates):
        low, high = np.percentile(rep, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
        tail = min(np.mean(rep <= tol), np.mean(rep >= -tol))
        pval = float(np.clip(2.0 * tail, 1.0 / n_boot, 1.0))
        se = float(rep.std(ddof=1)) if n_boot > 1 else 0.0
        out[name] = BootResult(float(p), float(low), float(high), pval, se, paired_seeds)
    return out


def two_level_bootstrap(a: QueryHits, b: QueryHits, n_boot: int = 1000, seed: int = 0,
                        chunk: int = 1000) -> dict[str, BootResult]:
    """Two-level bootstrap of metric(a) - metric(b) in points, for the seven test metrics.

    Each replicate draws a's seeds and b's seeds with replacement (together, by seed number, when
    both runs trained the same seeds: :func:`seed_pairing`; independently otherwise), then the
    image queries and the caption queries with replacement (independently of each other, the
    same indices for a and b: paired by query), and takes the difference of the resampled
    means; mR is the mean of the six resampled recalls. The interval is the 95% percentile
    interval; the p-value is 2 min(P(d* <= 0), P(d* >= 0)) clipped to [1/B, 1]; ``se`` is the
    standard deviation of the replicates. Resampling is done with count weights (multinomial
    draws), so each chunk of replicates is a few matrix products.
    """
    return two_level_bootstraps([(a, b)], n_boot, seed, chunk)[0]
