"""Bootstrap resamples scaled to a table's tests, so that Holm's correction can still star a
clear difference; raw and Holm-adjusted p in the data outputs."""

from __future__ import annotations

import io

import numpy as np
import polars as pl
import pytest
from compare_records import ranked_record, ranks_hitting, write

from rdbench.results import stats
from rdbench.results.compare import compare

ROWS = 15  # compared with the baseline: 15 rows x 7 test metrics = 105 tests


def many_rows(root):
    """Suite ``s``: ``base`` hits half the queries, ``good`` all of them, and 14 rows that hit
    what ``base`` hits but one caption more or less (so they are not identical to it)."""
    for seed in (0, 1):
        base = ranks_hitting(20, 100, 10, 50)
        write(root, ranked_record("s", "base", 0, seed, base), ranks=base)
        good = ranks_hitting(20, 100, 20, 100)
        write(root, ranked_record("s", "good", 1, seed, good), ranks=good)
        for i in range(ROWS - 1):
            near = ranks_hitting(20, 100, 10, 49 + 2 * (i % 2))
            write(root, ranked_record("s", f"near{i:02d}", 2 + i, seed, near), ranks=near)


def test_auto_resamples():
    assert stats.auto_resamples(0) == stats.auto_resamples(2) == 1000
    assert stats.auto_resamples(105) == 42_000  # ceil(20 * 105 / 0.05)
    assert stats.auto_resamples(10_000) == stats.MAX_RESAMPLES
    # The smallest attainable p is then at most a twentieth of Holm's first threshold.
    for m in (1, 7, 70, 105, 250):
        assert 1 / stats.auto_resamples(m) <= stats.ALPHA / m / 20


def test_a_clear_difference_survives_holm_over_many_tests(tmp_path):
    many_rows(tmp_path)
    fixed = compare(tmp_path, baseline="base", n_boot=1000).text
    # With B = 1000 the smallest p is 0.001, and Holm's first threshold over 105 tests is
    # 0.05 / 105 = 0.00048: not even a +50-point difference can be starred, and the notes say so.
    assert "*" not in next(ln for ln in fixed.splitlines() if ln.startswith("good "))
    assert ("With B = 1,000 (--bootstrap) the smallest attainable bootstrap p, 1/B = 0.001, is not "
            "below Holm's first threshold α/m = 0.00048 for the 105 tests") in fixed
    scaled = compare(tmp_path, baseline="base").text
    good = next(ln for ln in scaled.splitlines() if ln.startswith("good "))
    assert good.count("+50.00*") == 7
    assert "after Holm correction over the 105 tests of this table" in scaled
    assert "B = 42,000 resamples, seed 0" in scaled
    assert "B = 42,000 resamples, scaled to the 105 tests of this table" in scaled
    near = next(ln for ln in scaled.splitlines() if ln.startswith("near00 "))
    assert "*" not in near


def test_csv_carries_raw_and_holm_p(tmp_path):
    many_rows(tmp_path)
    df = pl.read_csv(io.StringIO(compare(tmp_path, baseline="base", fmt="csv").text))
    good = df.filter(pl.col("run") == "good").row(0, named=True)
    assert good["test/mR_p"] == pytest.approx(1 / 42_000)
    # The 105 raw p-values: good's 7 are the smallest, so Holm multiplies them by 105 .. 99.
    assert good["test/mR_p_holm"] == pytest.approx(105 / 42_000) and good["test/mR_significant"]
    tested = df.filter(pl.col("test/mR_test") == "bootstrap")
    raw = [p for c in stats.BOOTSTRAP_METRICS for p in tested[f"{c}_p"].to_list()]
    adjusted = [p for c in stats.BOOTSTRAP_METRICS for p in tested[f"{c}_p_holm"].to_list()]
    assert adjusted == pytest.approx(stats.holm(raw))
    assert all(h >= p for p, h in zip(raw, adjusted))
    assert good["test/mR_se"] >= 0 and "test/mR_p_holm" in df.columns
    base = df.filter(pl.col("run") == "base").row(0, named=True)
    assert base["test/mR_p"] is None and base["test/mR_p_holm"] is None


def test_shared_draws_give_each_pair_what_it_gets_alone():
    rng = np.random.default_rng(4)

    def run(seeds, p):
        i2t = (rng.random((seeds, 3, 30)) < p).astype(float)
        t2i = (rng.random((seeds, 3, 90)) < p).astype(float)
        return stats.QueryHits(i2t.mean(0), t2i.mean(0), seeds, i2t, t2i)

    base, a, b = run(3, 0.5), run(2, 0.6), run(1, 0.4)
    together = stats.two_level_bootstraps([(a, base), (b, base), (a, b)], 500, 9, chunk=128)
    alone = [stats.two_level_bootstrap(x, y, 500, 9, chunk=128) for x, y in ((a, base), (b, base), (a, b))]
    for t, s in zip(together, alone):
        for name in stats.BOOTSTRAP_METRICS:
            assert t[name].p == s[name].p and t[name].se == pytest.approx(s[name].se)
            assert (t[name].low, t[name].high) == pytest.approx((s[name].low, s[name].high))
    with pytest.raises(ValueError, match="different test sets"):
        stats.two_level_bootstraps([(a, stats.QueryHits(np.ones((3, 5)), np.ones((3, 90)), 1))])
