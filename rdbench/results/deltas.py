"""Differences to a baseline and their tests (``--baseline``): the statistics of a suite table.

The order of the work is what this module is for. Which Δs of a table will be tested, and by
which test, is known before any resampling (from which rows have per-query ranks and how many
seeds each run has). So the number of tests m that Holm's correction will cover is counted
first, the bootstrap's resamples are chosen from it (its smallest attainable p is 1/B, and
Holm's first threshold is alpha/m: with B below m/alpha no Δ could ever be starred), every row
is then bootstrapped against its baseline in one pass that shares the query draws
(:func:`rdbench.results.stats.two_level_bootstraps`), and finally the table's p-values are
corrected together. The notes say which test produced each asterisk and how many resamples it
took, so that no star is unexplained.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import polars as pl

from rdbench.results import stats
from rdbench.results.model import SuiteTable, column_for
from rdbench.results.record import RANKS_FILE


def _ranks_paths(row) -> list[str]:
    return [str(Path(p).parent / RANKS_FILE) for p in row.data["paths"]]


def _per_seed(df: pl.DataFrame, row, key: str) -> list[float]:
    if key not in df.columns:
        return []
    return df.filter(pl.col("path").is_in(row.data["paths"]))[key].drop_nulls().to_list()


def _pairs(table: SuiteTable, variants: list) -> list[tuple]:
    """(row, baseline) for every row with successful seeds and a baseline variant of the same
    dataset and backbone; rows lacking one are listed in ``table.unmatched``."""
    setup = ("dataset", "dataset_fingerprint", "backbone")
    pairs = []
    for row in table.rows:
        match = [b for b in variants if all(b.data[k] == row.data[k] for k in setup)]
        if match and match[0] is row or not row.seeds:
            continue
        if not match or not match[0].seeds:
            table.unmatched.append(row.label)
            continue
        pairs.append((row, match[0]))
    return pairs


def _hits(pairs: list[tuple], warnings: list[str]) -> dict[int, tuple]:
    """index of a pair -> (row hits, baseline hits) for the pairs the bootstrap can take."""
    cache: dict[str, stats.QueryHits | None] = {}

    def load(r):
        if r.label not in cache:
            try:
                cache[r.label] = stats.load_hits(_ranks_paths(r), r.data.get("chosen_seeds"))
            except ValueError as exc:
                warnings.append(f"{exc}; no bootstrap for {r.data['suite']}/{r.label}")
                cache[r.label] = None
        return cache[r.label]

    out = {}
    for i, (row, base) in enumerate(pairs):
        row_hits, base_hits = load(row), load(base)
        if row_hits is None or base_hits is None:
            continue
        if row_hits.shape != base_hits.shape:
            warnings.append(f"{row.data['suite']}/{row.label}: runs answered different test sets "
                            f"({row_hits.shape[0]} / {row_hits.shape[1]} vs {base_hits.shape[0]} / "
                            f"{base_hits.shape[1]} image / caption queries); no bootstrap")
            continue
        out[i] = (row_hits, base_hits)
    return out


def attach_baseline(table: SuiteTable, baseline: str, df: pl.DataFrame, n_boot: int | None, seed: int,
                    notes: list[str], warnings: list[str], tie_rule: str = "strict") -> None:
    """Compare every row with the baseline variant that used the same data and backbone.

    ``n_boot`` None scales the resamples with the table's tests (:func:`stats.auto_resamples`).
    """
    variants = [r for r in table.rows if baseline in (r.label, r.data["base_run"])]
    if not variants:
        notes.append(f"note: suite '{table.suite}' has no run '{baseline}'; no deltas shown")
        return
    table.baseline = variants[0].label if len(variants) == 1 else baseline
    pairs = _pairs(table, variants)
    columns = table.value_columns
    # per-query hits are kept under the strict rule only: no bootstrap for a lineage's recalls
    needs_boot = tie_rule == "strict" and any(c.key in stats.BOOTSTRAP_METRICS for c in columns)
    hits = _hits(pairs, warnings) if needs_boot else {}
    plan = []  # (pair index, column, delta, row values, baseline values)
    for i, (row, base) in enumerate(pairs):
        for c in columns:
            mean, base_mean = row.values[c.key][0], base.values[c.key][0]
            delta = None if mean is None or base_mean is None else mean - base_mean
            plan.append((i, c.key, delta, _per_seed(df, row, c.key), _per_seed(df, base, c.key)))
    n_tests = sum(stats.test_kind(key, delta, len(v), len(bv), i in hits) is not None
                  for i, key, delta, v, bv in plan)
    resamples = n_boot if n_boot is not None else stats.auto_resamples(n_tests)
    boots = {}
    if hits:
        boots = dict(zip(hits, stats.two_level_bootstraps(list(hits.values()), resamples, seed)))
        table.resamples = resamples
    for i, key, delta, values, base_values in plan:
        row_hits, base_hits = hits.get(i, (None, None))
        pairs[i][0].deltas[key] = stats.choose_delta(key, delta, values, base_values, row_hits,
                                                     base_hits, boots.get(i))
    table.n_tests = holm(table)


def holm(table: SuiteTable) -> int:
    """Replace every tested delta's significance by Holm's over the table; the number of tests."""
    tested = [(row, key) for row in table.rows for key, d in row.deltas.items() if d.p is not None]
    adjusted = stats.holm([row.deltas[key].p for row, key in tested])
    for (row, key), p_holm in zip(tested, adjusted):
        row.deltas[key] = replace(row.deltas[key], p_holm=p_holm, significant=p_holm < stats.ALPHA)
    return len(tested)


def row_mdd(delta: stats.Delta | None) -> float | None:
    """The minimum detectable difference of one bootstrapped Δ (80% power, two-sided 0.05)."""
    if delta is None or delta.se is None:
        return None
    return (stats.Z_975 + stats.Z_80) * delta.se


def table_mdd(table: SuiteTable) -> float | None:
    """Median over rows of the minimum detectable test-mR difference (two-level bootstrap SE)."""
    mdds = [m for row in table.rows if (m := row_mdd(row.deltas.get("test/mR"))) is not None]
    return statistics.median(mdds) if mdds else None


def _resamples_note(table: SuiteTable, n_boot: int | None) -> str | None:
    """How B was chosen, against Holm's first threshold alpha/m (None when there is nothing to add)."""
    b, m = table.resamples, table.n_tests
    if b is None or not m:
        return None
    threshold = stats.ALPHA / m
    reachable = 1.0 / b < threshold
    if n_boot is None and b < stats.MAX_RESAMPLES:
        return (f"B = {b:,} resamples, scaled to the {m} test{'s' * (m != 1)} of this table "
                f"(max({stats.MIN_RESAMPLES}, {stats.RESAMPLE_FACTOR} m/α)): the smallest attainable "
                f"bootstrap p, 1/B, is at most a twentieth of Holm's first threshold α/m = {threshold:.2g}.")
    if n_boot is None:
        need = stats.resamples_needed(m)
        return (f"B = {b:,} resamples, the cap ({stats.RESAMPLE_FACTOR} m/α would be {need:,} for the "
                f"{m} tests of this table): the smallest attainable bootstrap p, 1/B = {1 / b:.2g}, "
                + (f"is below Holm's first threshold α/m = {threshold:.2g}." if reachable else
                   f"is not below Holm's first threshold α/m = {threshold:.2g}, so no bootstrap Δ can "
                   "be starred; raise --bootstrap."))
    if not reachable:
        return (f"With B = {b:,} (--bootstrap) the smallest attainable bootstrap p, 1/B = {1 / b:.2g}, "
                f"is not below Holm's first threshold α/m = {threshold:.2g} for the {m} tests of this "
                "table: no bootstrap Δ can be starred (without --bootstrap, B scales with the tests).")
    return None


def test_footnotes(table: SuiteTable, n_boot: int | None, seed: int) -> list[str]:
    """Which test each delta used, grouped by test, so that no asterisk is unexplained."""
    b = table.resamples
    texts = {"welch": ("Welch's t-test across seeds (no per-query ranks, 3 or more seeds in both runs; "
                       "two-sided p)"),
             "bootstrap": (f"two-level bootstrap over seeds and test queries (seeds resampled per run, "
                           f"queries resampled paired; B = {b or 0:,} resamples, seed {seed}; two-sided p)"),
             "bootstrap-paired": (f"two-level bootstrap over seeds and test queries (both runs trained the same "
                                  f"seeds: seeds resampled together by seed number, queries resampled paired; "
                                  f"B = {b or 0:,} resamples, seed {seed}; two-sided p)")}
    groups: dict[str, list[str]] = {}
    untested: dict[str, list[str]] = {}  # reason -> "row: columns"
    for row in table.rows:
        for test in sorted({d.test + ("-paired" if d.paired_seeds else "") for d in row.deltas.values() if d.test}):
            groups.setdefault(test, []).append(row.label)
        skipped: dict[str, list[str]] = {}
        for key, d in row.deltas.items():
            if d.delta is not None and d.test is None:
                skipped.setdefault(d.why_untested, []).append(column_for(key).header)
        for why, headers in skipped.items():
            untested.setdefault(why, []).append(f"{row.label} ({', '.join(headers)})")
    lines = [f"Test for {', '.join(labels)}: {texts[test]}." for test, labels in groups.items()]
    if "bootstrap" in groups or "bootstrap-paired" in groups:
        note = _resamples_note(table, n_boot)
        lines += [note] if note else []
    lines += [f"Not tested, {why}: {'; '.join(items)}." for why, items in untested.items()]
    mdd = table_mdd(table)
    if mdd is not None:
        lines.append(f"Minimum detectable mR difference at 80 % power: {mdd:.2f} points.")
    return lines
