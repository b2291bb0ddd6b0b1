"""Significance tests: the t distribution against closed forms, Welch's test, the paired bootstrap."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import polars as pl
import pytest
from compare_records import make_record, ranks_hitting, two_seed_suite, write

from rdbench.results import stats
from rdbench.results.compare import compare


def t_pdf(x, df):
    return (math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
            * (1 + x * x / df) ** (-(df + 1) / 2))


def simpson_cdf(t, df, n=20_000):
    """P(T <= t) by integrating the density from 0 (independent of the beta-function route)."""
    h = t / n
    total = t_pdf(0, df) + t_pdf(t, df) + sum((4 if i % 2 else 2) * t_pdf(i * h, df) for i in range(1, n))
    return 0.5 + total * h / 3


@pytest.mark.parametrize("t", [0.1, 0.7, 1.0, 2.5, 8.0])
def test_t_cdf_closed_forms(t):
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    assert stats.t_cdf(-t, 2) == pytest.approx(1 - stats.t_cdf(t, 2), abs=1e-12)


@pytest.mark.parametrize("t, df", [(1.3, 3.0), (2.0, 5.52), (0.4, 17.0), (3.1, 4.0)])
def test_t_cdf_matches_numerical_integration(t, df):
    assert stats.t_cdf(t, df) == pytest.approx(simpson_cdf(t, df), abs=1e-9)


def test_t_cdf_textbook_values():
    # Two-sided critical values from printed t tables: t_{0.975, 10} = 2.228, t_{0.975, 4} = 2.776.
    assert 2 * stats.t_cdf(-2.228138851986, 10) == pytest.approx(0.05, abs=1e-9)
    assert 2 * stats.t_cdf(-2.776445105198, 4) == pytest.approx(0.05, abs=1e-9)
    assert stats.t_cdf(-1.959963984540, 1e7) == pytest.approx(0.025, abs=1e-6)  # -> normal
    assert stats.t_cdf(0.0, 3) == 0.5


@pytest.mark.parametrize("a, b", [([1, 2, 3], [4, 5, 6]), ([1, 2, 3, 4], [2, 4, 6, 8, 10]),
                                  ([12.1, 12.9, 12.4, 13.0, 12.6], [11.8, 12.2, 12.0, 12.9, 11.5])])
def test_welch_equals_statsmodels_and_scipy_on_the_same_samples(a, b):
    """rdbench's Welch test against two libraries' own (statsmodels' is an independent
    implementation of the same test)."""
    from scipy.stats import ttest_ind
    from statsmodels.stats.weightstats import ttest_ind as sm_ttest_ind

    w = stats.welch_ttest(a, b)
    t, p, df = sm_ttest_ind(a, b, usevar="unequal")
    assert (w.t, w.p, w.df) == pytest.approx((t, p, df), rel=1e-10)
    assert w.p == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)


def test_holm_equals_statsmodels_and_the_mdd_quantiles_its_power_solver():
    from statsmodels.stats.multitest import multipletests
    from statsmodels.stats.power import zt_ind_solve_power

    raw = [0.001, 0.2, 0.013, 0.04, 0.5, 0.0102]
    assert stats.holm(raw) == pytest.approx(list(multipletests(raw, method="holm")[1]), rel=1e-12)
    # The minimum detectable difference is (z_{0.975} + z_{0.80}) SE: the effect a two-sided
    # z-test at alpha 0.05 detects with power 0.8, which statsmodels' power solver also finds.
    n = 8
    d = zt_ind_solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=1.0)
    assert d / math.sqrt(2 / n) == pytest.approx(stats.Z_975 + stats.Z_80, rel=1e-4)


def test_welch_by_hand():
    # a = 1, 2, 3 and b = 4, 5, 6: means 2 and 5, variances 1, se = sqrt(2/3), t = -3.6742,
    # df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4, two-sided p = 0.02131 (as R's t.test prints).
    w = stats.welch_ttest([1, 2, 3], [4, 5, 6])
    assert w.t == pytest.approx(-3 / math.sqrt(2 / 3))
    assert w.df == pytest.approx(4.0)
    assert w.p == pytest.approx(0.02131, abs=5e-6)
    # Unequal sizes and spreads: se^2 = 5/12 + 2, df = se^4 / ((5/12)^2/3 + 2^2/4) = 5.5208.
    w = stats.welch_ttest([1, 2, 3, 4], [2, 4, 6, 8, 10])
    assert w.t == pytest.approx(-3.5 / math.sqrt(5 / 12 + 2))
    assert w.df == pytest.approx((5 / 12 + 2) ** 2 / ((5 / 12) ** 2 / 3 + 1), rel=1e-12)
    assert w.p == pytest.approx(2 * simpson_cdf(w.t, w.df), abs=1e-8)
    assert 0.069 < w.p < 0.0692


def test_welch_degenerate_samples():
    assert stats.welch_ttest([3, 3, 3], [3, 3, 3]).p == 1.0
    assert stats.welch_ttest([3, 3, 3], [4, 4, 4]).p == 0.0
    with pytest.raises(ValueError, match="two values"):
        stats.welch_ttest([1], [1, 2])


def hits(tmp_path, name, ranks_per_seed):
    paths = []
    for seed, (i2t, t2i) in enumerate(ranks_per_seed):
        path = tmp_path / name / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"split": "test", "i2t": i2t, "t2i": t2i}))
        paths.append(path)
    return stats.load_hits(paths)


def test_load_hits_averages_seeds(tmp_path):
    h = hits(tmp_path, "a", [([0, 3, 7, 20], [0] * 8), ([0, 0, 12, 20], [9] * 8)])
    # K=1: (1,0,0,0) and (1,1,0,0); K=5: (1,1,0,0) and (1,1,0,0); K=10: (1,1,1,0) and (1,1,0,0)
    assert h.i2t.tolist() == [[1, 0.5, 0, 0], [1, 1, 0, 0], [1, 1, 0.5, 0]]
    assert h.t2i[:, 0].tolist() == [0.5, 0.5, 1.0] and h.shape == (4, 8) and h.seeds == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="bad.json: is not readable as JSON"):
        stats.load_hits([bad])
    with pytest.raises(ValueError, match="missing"):
        stats.load_hits([tmp_path / "absent.json"])
    with pytest.raises(ValueError, match="other seeds have 4 / 8"):
        hits(tmp_path, "b", [([0] * 4, [0] * 8), ([0] * 5, [0] * 8)])


def test_bootstrap_detects_a_clear_difference_and_is_deterministic(tmp_path):
    all_hit = hits(tmp_path, "all", [ranks_hitting(40, 200, 40, 200)])
    half_hit = hits(tmp_path, "half", [ranks_hitting(40, 200, 20, 100)])
    first = stats.paired_bootstrap(all_hit, half_hit, n_boot=1000, seed=7)
    again = stats.paired_bootstrap(all_hit, half_hit, n_boot=1000, seed=7)
    assert first == again
    assert set(first) == set(stats.BOOTSTRAP_METRICS)
    for name, iv in first.items():
        assert iv.delta == pytest.approx(50.0) and iv.significant, name
        assert 0 < iv.low < 50 < iv.high <= 100
    other_seed = stats.paired_bootstrap(all_hit, half_hit, n_boot=1000, seed=8)
    assert other_seed["test/mR"] != first["test/mR"]


def test_bootstrap_mr_replicate_is_mean_of_six(tmp_path):
    # I2T hits on every image for one run and none for the other; T2I identical: mR delta = 50.
    a = hits(tmp_path, "a", [ranks_hitting(10, 50, 10, 25)])
    b = hits(tmp_path, "b", [ranks_hitting(10, 50, 0, 25)])
    boot = stats.paired_bootstrap(a, b, n_boot=200)
    assert boot["test/i2t_R@1"].low == boot["test/i2t_R@1"].high == 100.0
    assert boot["test/t2i_R@1"].low == boot["test/t2i_R@1"].high == 0.0
    assert boot["test/mR"].low == boot["test/mR"].high == boot["test/mR"].delta == 50.0


def test_bootstrap_does_not_flag_identical_runs(tmp_path):
    rng = np.random.default_rng(0)
    ranks = [(rng.integers(0, 30, 40).tolist(), rng.integers(0, 30, 200).tolist())]
    a, b = hits(tmp_path, "a", ranks), hits(tmp_path, "b", ranks)
    for iv in stats.paired_bootstrap(a, b).values():
        assert (iv.delta, iv.low, iv.high, iv.significant) == (0.0, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="different test sets"):
        stats.paired_bootstrap(a, hits(tmp_path, "c", [([0] * 41, [0] * 200)]))


def test_compare_picks_two_level_bootstrap_when_ranks_exist(tmp_path):
    two_seed_suite(tmp_path)
    result = compare(tmp_path, baseline="base", columns=["mR", "val/mR"], fmt="csv")
    df = pl.read_csv(io.StringIO(result.text))
    good = df.filter(pl.col("run") == "good").row(0, named=True)
    assert (good["test/mR_delta"], good["test/mR_test"], good["test/mR_significant"]) == (50.0, "bootstrap", True)
    assert good["val/mR_test"] is None  # validation has no per-query ranks and only 2 seeds
    same = df.filter(pl.col("run") == "same").row(0, named=True)
    assert (same["test/mR_delta"], same["test/mR_significant"]) == (0.0, False)
    text = compare(tmp_path, baseline="base", columns=["mR"]).text
    rows = {ln.split()[0]: ln for ln in text.splitlines()[4:7]}
    assert rows["good"].endswith("100.00 ± 0.00  +50.00*") and rows["same"].endswith("+0.00")
    assert "Test for good, same: two-level bootstrap over seeds and test queries" in text


def test_compare_picks_welch_from_three_seeds(tmp_path):
    # mR per seed: base 13.5, 14.5, 15.5; up 23.5, 24.5, 25.5 (t = 12.25, df = 4); near 14.5 +- 1
    for seed in range(3):
        write(tmp_path, make_record("s", "base", 1, seed, base=10.0 + seed))
        write(tmp_path, make_record("s", "up", 2, seed, base=20.0 + seed))
        write(tmp_path, make_record("s", "near", 3, seed, base=10.0 + 2 * seed - 1))
    result = compare(tmp_path, baseline="base", columns=["mR"])
    lines = result.text.splitlines()
    up = next(ln for ln in lines if ln.startswith("up "))
    near = next(ln for ln in lines if ln.startswith("near "))
    assert up.endswith("+10.00*") and near.endswith("+0.00")
    assert "Test for up, near: Welch's t-test across seeds" in result.text
    # Without test_ranks.json the two-level bootstrap is unavailable; the warning names the file.
    assert any("test_ranks.json" in w and "no bootstrap" in w for w in result.warnings)
