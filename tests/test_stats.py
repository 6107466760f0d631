"""The comparison statistics on constructed inputs whose mean, std, interval and p-values are worked out here
from closed forms (Student t with 1 and 2 degrees of freedom, the exact signed-rank distribution by
enumeration), not by calling the code under test."""
import itertools
import math

import pytest

from cbamlab.errors import CbamlabError
from cbamlab.report import stats


def t2_two_sided_p(t):
    # Student t, df = 2: CDF(t) = 1/2 + t / (2 sqrt(2 + t^2))
    return 1.0 - abs(t) / math.sqrt(2.0 + t * t)


def t2_quantile(confidence):
    # solve |t| / sqrt(2 + t^2) = c
    return confidence * math.sqrt(2.0 / (1.0 - confidence ** 2))


def t1_two_sided_p(t):
    # Student t, df = 1, is the Cauchy distribution: CDF(t) = 1/2 + atan(t) / pi
    return 1.0 - 2.0 / math.pi * math.atan(abs(t))


def test_mean_and_sample_std():
    xs = [2, 4, 4, 4, 5, 5, 7, 9]  # mean 5, squared deviations sum to 32
    assert stats.mean(xs) == pytest.approx(5.0)
    assert stats.sample_std(xs) == pytest.approx(math.sqrt(32 / 7))  # n - 1 in the denominator
    s = stats.summarize(xs)
    assert (s.n, s.mean, s.std) == (8, pytest.approx(5.0), pytest.approx(math.sqrt(32 / 7)))


def test_single_value_has_no_spread():
    assert stats.mean([0.7]) == 0.7
    assert math.isnan(stats.sample_std([0.7]))
    assert all(math.isnan(v) for v in stats.t_interval([0.7]))


def test_empty_and_nan_inputs_are_errors():
    with pytest.raises(CbamlabError, match="no values"):
        stats.mean([])
    with pytest.raises(CbamlabError, match="NaN"):
        stats.sample_std([1.0, float("nan")])


def test_paired_differences_order_and_length():
    assert stats.paired_differences([3, 5, 9], [1, 1, 2]) == [2, 4, 7]
    with pytest.raises(CbamlabError, match="equal lengths"):
        stats.paired_differences([1, 2], [1, 2, 3])


def test_t_critical_matches_closed_forms():
    assert stats.t_critical(0.95, 1) == pytest.approx(math.tan(math.pi * 0.95 / 2), rel=1e-9)  # 12.706
    assert stats.t_critical(0.95, 2) == pytest.approx(t2_quantile(0.95), rel=1e-9)  # 4.303
    assert stats.t_critical(0.95, 2) == pytest.approx(4.302652729911275, rel=1e-9)
    with pytest.raises(CbamlabError, match="confidence"):
        stats.t_critical(1.5, 3)


def test_t_interval_three_values():
    xs = [1.0, 2.0, 3.0]  # mean 2, s = 1, df = 2
    half = t2_quantile(0.95) * 1.0 / math.sqrt(3)
    lo, hi = stats.t_interval(xs)
    assert lo == pytest.approx(2.0 - half) and hi == pytest.approx(2.0 + half)
    lo90, hi90 = stats.t_interval(xs, confidence=0.90)
    assert hi90 - 2.0 == pytest.approx(t2_quantile(0.90) / math.sqrt(3))
    assert hi90 < hi


def test_paired_t_test_df2():
    a = [0.91, 0.93, 0.95]
    b = [0.90, 0.91, 0.92]  # differences 0.01, 0.02, 0.03: mean 0.02, s 0.01
    t, p = stats.paired_t_test(a, b)
    assert t == pytest.approx(2 * math.sqrt(3), rel=1e-9)
    assert p == pytest.approx(t2_two_sided_p(2 * math.sqrt(3)), rel=1e-9)  # 0.0742
    assert p == pytest.approx(0.07418, abs=1e-5)
    t_rev, p_rev = stats.paired_t_test(b, a)
    assert t_rev == pytest.approx(-t) and p_rev == pytest.approx(p)


def test_paired_t_test_df1():
    t, p = stats.paired_t_test([5.0, 7.0], [4.0, 4.0])  # d = 1, 3: mean 2, s = sqrt(2), t = 2 / (sqrt2/sqrt2) = 2
    assert t == pytest.approx(2.0)
    assert p == pytest.approx(t1_two_sided_p(2.0), rel=1e-9)  # 0.2952


def test_paired_comparison_bundles_everything():
    a = [0.80, 0.84, 0.83]
    b = [0.79, 0.81, 0.83]  # d = 0.01, 0.03, 0.00: mean 0.013333, s = 0.015275
    pair = stats.paired_comparison(a, b)
    d = [0.01, 0.03, 0.0]
    m = sum(d) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in d) / 2)
    half = t2_quantile(0.95) * s / math.sqrt(3)
    assert pair.n == 3
    assert pair.mean == pytest.approx(m) and pair.std == pytest.approx(s)
    assert pair.ci_low == pytest.approx(m - half) and pair.ci_high == pytest.approx(m + half)
    assert pair.p_value == pytest.approx(t2_two_sided_p(m / (s / math.sqrt(3))), rel=1e-9)
    assert pair.ci_low < 0 < pair.ci_high and pair.p_value > 0.05  # the interval covers 0 <=> p > 0.05
    assert pair.wilcoxon_p is None  # n = 3 is too few for the signed-rank test


def test_no_spread_is_not_turned_into_certainty():
    t, p = stats.paired_t_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (t, p) == (0.0, 1.0)
    t, p = stats.paired_t_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # every difference 0.1 (up to rounding)
    # exactly equal differences give an undefined t; rounding may leave a tiny spread, which gives p ~ 0
    assert math.isnan(p) or p < 1e-6
    t, p = stats.one_sample_t_test([0.25, 0.25, 0.25])
    assert math.isinf(t) and math.isnan(p)


def exact_signed_rank_p(d):
    """Two-sided exact p of the signed-rank statistic by enumerating all 2^n sign patterns (|d| distinct)."""
    ranks = {v: r for r, v in enumerate(sorted(abs(x) for x in d), start=1)}
    w_obs = sum(ranks[abs(x)] for x in d if x > 0)
    n = len(d)
    total = sum(range(1, n + 1))
    ws = [sum(r for r, s in zip(range(1, n + 1), signs) if s) for signs in itertools.product([0, 1], repeat=n)]
    lower = sum(w <= w_obs for w in ws) / len(ws)
    upper = sum(w >= w_obs for w in ws) / len(ws)
    assert total == n * (n + 1) // 2
    return min(1.0, 2 * min(lower, upper))


def test_wilcoxon_exact_small_samples():
    a = [1.0] * 6
    b = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]  # all six differences positive: p = 2 / 2^6
    assert stats.wilcoxon_p(a, b) == pytest.approx(2 / 64)
    d = [0.5, -0.1, 0.7, 0.3, -0.2, 0.9, 0.4]
    p = stats.wilcoxon_p(d, [0.0] * 7)
    assert p == pytest.approx(exact_signed_rank_p(d))
    assert stats.wilcoxon_p([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) is None  # n = 5: could never reach 0.05


def test_verdict_sentences():
    pair = stats.paired_comparison([0.80, 0.84, 0.83], [0.79, 0.81, 0.83])
    s = stats.verdict("resnet20_cbam", "resnet20", pair)
    assert s.startswith("resnet20_cbam +1.33 ± 1.53 points top-1 vs resnet20")
    assert "not significant at n = 3" in s and f"p = {pair.p_value:.2f}" in s
    strong = stats.paired_comparison([0.90, 0.91, 0.92, 0.93], [0.80, 0.805, 0.81, 0.8125])
    assert strong.p_value < 0.05
    assert ", significant at n = 4" in stats.verdict("resnet20_se", "resnet20", strong)
    one = stats.paired_comparison([0.9], [0.8])
    assert "single seed" in stats.verdict("x", "y", one)


def test_format_p():
    assert stats.format_p(0.4123) == "0.41"
    assert stats.format_p(0.0042) == "0.004"
    assert stats.format_p(0.00001) == "< 0.001"
    assert stats.format_p(None) == "n/a" and stats.format_p(float("nan")) == "n/a"
