"""Statistics for comparisons paired by seed: mean ± sample std, paired differences, a 95 % t interval,
the paired t-test and (when n allows) the Wilcoxon signed-rank test.

Pure functions of plain sequences of floats. Two variants trained with the same seed see the same data order,
augmentation draws and shared initial weights, so their per-seed results are paired: the test is on the
per-seed differences, which removes the seed-to-seed spread both variants share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import CbamlabError

# Below this many non-zero differences the exact two-sided Wilcoxon p-value cannot go under 0.05
# (its smallest value is 2 / 2**n: 0.0625 at n = 5, 0.03125 at n = 6), so it is not reported.
WILCOXON_MIN_N = 6


@dataclass(frozen=True)
class Summary:
    """n values: their mean and sample standard deviation (nan when n < 2)."""

    n: int
    mean: float
    std: float


@dataclass(frozen=True)
class Paired:
    """Differences a_i - b_i over n pairs: mean, sample std, `confidence` t interval of the mean, paired t-test."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    t: float
    p_value: float
    wilcoxon_p: float | None = None
    confidence: float = 0.95


def _floats(xs: Sequence[float], what: str = "values") -> list[float]:
    out = [float(x) for x in xs]
    if not out:
        raise CbamlabError(f"no {what} to summarise")
    if any(math.isnan(x) for x in out):
        raise CbamlabError(f"{what} contain NaN")
    return out


def mean(xs: Sequence[float]) -> float:
    xs = _floats(xs)
    return math.fsum(xs) / len(xs)


def sample_std(xs: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction (divide by n - 1); nan for a single value."""
    xs = _floats(xs)
    if len(xs) < 2:
        return math.nan
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def summarize(xs: Sequence[float]) -> Summary:
    xs = _floats(xs)
    return Summary(len(xs), mean(xs), sample_std(xs))


def paired_differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a_i - b_i for each pair; both sequences must be in the same (seed) order and of equal length."""
    a, b = _floats(a, "first values"), _floats(b, "second values")
    if len(a) != len(b):
        raise CbamlabError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    return [x - y for x, y in zip(a, b)]


def t_critical(confidence: float, df: int) -> float:
    """The two-sided Student t quantile: P(|T| <= q) = confidence with df degrees of freedom."""
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise CbamlabError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def t_interval(xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the mean: mean ± t_{(1+c)/2, n-1} · s / sqrt(n); (nan, nan) when n < 2."""
    xs = _floats(xs)
    n = len(xs)
    if n < 2:
        return (math.nan, math.nan)
    m, s = mean(xs), sample_std(xs)
    half = t_critical(confidence, n - 1) * s / math.sqrt(n)
    return (m - half, m + half)


def one_sample_t_test(xs: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) for 'the mean is 0'. With no spread: p = 1 when all values are 0, else t = ±inf, p = nan
    (the t statistic is undefined, and claiming p = 0 from n identical numbers would overstate the evidence)."""
    from scipy import stats

    xs = _floats(xs)
    n = len(xs)
    if n < 2:
        return (math.nan, math.nan)
    m, s = mean(xs), sample_std(xs)
    if s == 0.0:
        return (0.0, 1.0) if m == 0.0 else (math.copysign(math.inf, m), math.nan)
    t = m / (s / math.sqrt(n))
    return (t, float(2.0 * stats.t.sf(abs(t), n - 1)))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test of a against b: (t, two-sided p) on the differences a_i - b_i with n - 1 degrees of freedom."""
    return one_sample_t_test(paired_differences(a, b))


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (zeros dropped, exact when small);
    None when fewer than WILCOXON_MIN_N non-zero differences, where it could never reach 0.05."""
    from scipy import stats

    d = [x for x in paired_differences(a, b) if x != 0.0]
    if len(d) < WILCOXON_MIN_N:
        return None
    return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """Everything the report says about variant a against baseline b, paired by position (seed)."""
    d = paired_differences(a, b)
    lo, hi = t_interval(d, confidence)
    t, p = paired_t_test(a, b)
    return Paired(n=len(d), mean=mean(d), std=sample_std(d), ci_low=lo, ci_high=hi, t=t, p_value=p,
                  wilcoxon_p=wilcoxon_p(a, b), confidence=confidence)


def format_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def verdict(name: str, baseline: str, pair: Paired, metric: str = "top-1", scale: float = 100.0,
            alpha: float = 0.05) -> str:
    """One plain sentence of what the paired data support, e.g.
    'resnet20_cbam +0.4 ± 0.3 points top-1 vs resnet20, not significant at n = 3 (p = 0.41).'
    The ± is the sample std of the per-seed differences; `scale` turns fractions into points."""
    m = pair.mean * scale
    if pair.n < 2:
        return (f"{name} {m:+.2f} points {metric} vs {baseline} from a single seed: no spread, no test; "
                f"run more seeds before reading anything into it.")
    sd = pair.std * scale
    head = f"{name} {m:+.2f} ± {sd:.2f} points {metric} vs {baseline}"
    if math.isnan(pair.p_value):
        return f"{head}, the same difference in every seed, so no test is possible at n = {pair.n}."
    if pair.p_value < alpha:
        return f"{head}, significant at n = {pair.n} (p = {format_p(pair.p_value)})."
    return f"{head}, not significant at n = {pair.n} (p = {format_p(pair.p_value)})."
