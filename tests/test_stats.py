"""The comparison statistics on constructed inputs whose mean, std, interval and p-values are worked out here
from closed forms (Student t with 1 and 2 degrees of freedom, the exact signed-rank and sign-flip distributions
by enumeration, some counted by hand), not by calling the code under test."""
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
    assert pair.sign_flip_p == pytest.approx(4 / 8)


def test_no_spread_is_not_turned_into_certainty():
    t, p = stats.paired_t_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (t, p) == (0.0, 1.0)
    # every difference is 0.1, but float rounding leaves a spread of ~1e-16: still no spread, no t-test
    t, p = stats.paired_t_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert math.isinf(t) and t > 0 and math.isnan(p)
    t, p = stats.one_sample_t_test([0.25, 0.25, 0.25])
    assert math.isinf(t) and math.isnan(p)
    assert stats.no_spread([0.1, 0.1 + 1e-16, 0.1]) and not stats.no_spread([0.1, 0.1001, 0.1])


def one_more_image_each(n, size=359):
    """Top-1 of n seeds where the variant gets exactly one more test image right than the baseline in each."""
    base = [(300 + 7 * k) / size for k in range(n)]
    return [(300 + 7 * k + 1) / size for k in range(n)], base


def test_one_more_image_in_every_seed_is_not_significant_at_n3():
    a, b = one_more_image_each(3)
    assert sample_spread(a, b) > 0  # rounding: the differences are not bit-equal, the old t-test said p < 0.001
    pair = stats.paired_comparison(a, b)
    assert math.isnan(pair.p_value) and pair.sign_flip_p == pytest.approx(0.25)
    assert not stats.significant(pair)
    s = stats.verdict("resnet20_cbam", "resnet20", pair)
    assert "not significant" not in s and ", significant" not in s
    assert s.startswith("resnet20_cbam +0.28 ± 0.00 points top-1 vs resnet20, the same difference in every seed")
    assert "nothing is called significant at n = 3 (sign-flip p = 0.25; fewer than 6 seeds can never reach " \
           "p < 0.05)." in s


def test_zero_spread_is_never_significant_even_with_enough_seeds():
    a, b = one_more_image_each(8)
    pair = stats.paired_comparison(a, b)
    assert pair.sign_flip_p == pytest.approx(2 / 2 ** 8) and math.isnan(pair.p_value)
    assert not stats.significant(pair)
    assert "no t-test is possible" in stats.verdict("x", "y", pair)


def sample_spread(a, b):
    d = [x - y for x, y in zip(a, b)]
    return max(d) - min(d)


# (differences, exact two-sided sign-flip p), each counted by hand over the 2^n sign patterns
HAND_COUNTED = [
    ([1.0, 1.0, 1.0], 2 / 8),          # only +++ and --- reach |sum| = 3
    ([1.0, 2.0, 3.0], 2 / 8),          # sums 6 4 2 0 0 -2 -4 -6: |s| >= 6 twice
    ([3.0, 1.0, -1.0], 6 / 8),         # sums 5 3 3 1 -1 -3 -3 -5: |s| >= 3 six times
    ([1.0, 2.0, -3.0], 1.0),           # observed sum 0: every pattern reaches it
    ([-2.0, -2.0], 2 / 4),             # sums 4 0 0 -4
    ([4.0, 1.0, 1.0, 1.0], 2 / 16),    # 7 only from ++++ and ----
    ([4.0, 1.0, 1.0, -1.0], 8 / 16),   # |s| >= 5: 4 with any two of the ones, 4 with all three, and mirrors
    ([0.0, 0.0, 0.0], 1.0),
    ([0.5], 1.0),                      # one pair: +0.5 and -0.5 both reach it
    ([1.0] * 5, 2 / 32),               # 0.0625: five seeds cannot reach 0.05
    ([1.0] * 6, 2 / 64),               # 0.03125: six can
]


@pytest.mark.parametrize("d,p", HAND_COUNTED)
def test_sign_flip_p_exact_small_cases(d, p):
    assert stats.sign_flip_p(d) == pytest.approx(p, abs=1e-15)
    assert stats.sign_flip_p([-x for x in d]) == pytest.approx(p, abs=1e-15)  # two-sided
    assert stats.sign_flip_p([2.5 * x for x in d]) == pytest.approx(p, abs=1e-15)  # scale-free


def brute_sign_flip_p(d):
    observed = abs(sum(d))
    patterns = list(itertools.product([1, -1], repeat=len(d)))
    return sum(abs(sum(s * x for s, x in zip(signs, d))) >= observed - 1e-9 for signs in patterns) / len(patterns)


def test_sign_flip_p_equals_enumeration_and_has_its_floor():
    for n in range(1, 11):
        d = [((7 * i) % 5 - 2) * 0.01 + 0.003 * i for i in range(n)]
        assert stats.sign_flip_p(d) == pytest.approx(brute_sign_flip_p(d), abs=1e-15)
        assert stats.sign_flip_p(d) >= 2 / 2 ** n - 1e-15


def test_sign_flip_p_estimate_above_the_exact_limit(monkeypatch):
    d = [0.3, -0.1, 0.7, 0.2, -0.4, 0.9, 0.5, 0.1, -0.2, 0.6, 0.3, 0.8]
    exact = stats.sign_flip_p(d)
    assert exact == pytest.approx(brute_sign_flip_p(d), abs=1e-15)
    monkeypatch.setattr(stats, "EXACT_MAX_N", 5)
    assert stats.sign_flip_p(d) == pytest.approx(exact, abs=0.01)  # 65,536 draws: std ~ 0.001
    assert stats.sign_flip_p([1.0] * 45) == pytest.approx(1 / (2 ** 16 + 1))


def test_min_seeds():
    assert stats.min_seeds(0.05) == 6 and stats.WILCOXON_MIN_N == 6
    assert stats.min_seeds(0.1) == 5 and stats.min_seeds(0.01) == 8
    with pytest.raises(CbamlabError, match="alpha"):
        stats.min_seeds(0.0)


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
    assert pair.sign_flip_p == pytest.approx(4 / 8)  # d = 1, 3, 0 (x0.01): |s| >= 4 in 4 of 8 patterns
    s = stats.verdict("resnet20_cbam", "resnet20", pair)
    assert s == ("resnet20_cbam +1.33 ± 1.53 points top-1 vs resnet20, not significant at n = 3 "
                 f"(t-test p = {pair.p_value:.2f}, sign-flip p = 0.50; fewer than 6 seeds can never reach p < 0.05).")
    # n = 4: the t-test alone says p < 0.05, but four seeds cannot show it (sign-flip p >= 2/16)
    strong = stats.paired_comparison([0.90, 0.91, 0.92, 0.93], [0.80, 0.805, 0.81, 0.8125])
    assert strong.p_value < 0.05 and strong.sign_flip_p == pytest.approx(2 / 16)
    assert not stats.significant(strong)
    s = stats.verdict("resnet20_se", "resnet20", strong)
    assert ", not significant at n = 4 (t-test p = " in s and "sign-flip p = 0.12; fewer than 6 seeds" in s
    # n = 6 with a real spread, every difference positive: both tests under 0.05
    six = stats.paired_comparison([0.91, 0.93, 0.92, 0.95, 0.92, 0.94], [0.90, 0.90, 0.90, 0.90, 0.90, 0.90])
    assert six.p_value < 0.01 and six.sign_flip_p == pytest.approx(2 / 64)
    assert stats.significant(six)
    assert stats.verdict("x", "y", six) == (f"x +2.83 ± 1.47 points top-1 vs y, significant at n = 6 "
                                            f"(t-test p = {stats.format_p(six.p_value)}, sign-flip p = 0.03).")
    one = stats.paired_comparison([0.9], [0.8])
    assert "single seed" in stats.verdict("x", "y", one)


def test_format_p():
    assert stats.format_p(0.4123) == "0.41"
    assert stats.format_p(0.0042) == "0.004"
    assert stats.format_p(0.00001) == "< 0.001"
    assert stats.format_p(None) == "n/a" and stats.format_p(float("nan")) == "n/a"
