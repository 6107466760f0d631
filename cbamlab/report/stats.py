"""Statistics for comparisons paired by seed: mean ± sample std, paired differences, a 95 % t interval,
the paired t-test, the exact paired permutation (sign-flip) test and (when n allows) the Wilcoxon signed-rank test.

Pure functions of plain sequences of floats. Two variants trained with the same seed see the same data order,
augmentation draws and shared initial weights, so their per-seed results are paired: the test is on the
per-seed differences, which removes the seed-to-seed spread both variants share.

The t-test alone can claim any certainty from a few seeds: when every seed differs by about the same amount,
the spread is near zero and t is huge. The sign-flip test assumes only that, with no real difference, each
difference was as likely to have the other sign; with n pairs its p-value cannot go below 2 / 2**n. A difference
is called significant only when both tests say so, which takes at least `min_seeds()` seeds (6 for p < 0.05).

One baseline compared with several variants is a family of tests: one p < 0.05 among seven is what chance gives
about a third of the time. From HOLM_MIN_FAMILY comparisons with one baseline, both tests' p-values are
Holm-adjusted over the family (`holm`) and significance goes by the adjusted ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import CbamlabError

# Values that agree to this fraction of their size are equal: float rounding (0.9001 - 0.9 against
# 0.8501 - 0.85) must not pass for a real, tiny spread.
RELATIVE_TOLERANCE = 1e-9
# Up to this many pairs the sign-flip p-value is exact (2**n patterns, counted as one half against the other);
# above, it is estimated from MONTE_CARLO_DRAWS seeded random patterns.
EXACT_MAX_N = 40
MONTE_CARLO_DRAWS = 2 ** 16
# From this many comparisons with one baseline their p-values are Holm-adjusted; one or two are read as they are.
HOLM_MIN_FAMILY = 3


def min_seeds(alpha: float = 0.05) -> int:
    """The fewest pairs whose exact two-sided sign-flip (or signed-rank) p-value can go below `alpha`: its
    smallest value is 2 / 2**n (0.0625 at n = 5, 0.03125 at n = 6), so 6 for alpha = 0.05."""
    if not 0.0 < alpha < 1.0:
        raise CbamlabError(f"alpha must be in (0, 1), got {alpha}")
    n = 1
    while 2.0 / 2 ** n >= alpha:
        n += 1
    return n


# Below this many non-zero differences the exact two-sided Wilcoxon p-value cannot go under 0.05, so it is not
# reported.
WILCOXON_MIN_N = min_seeds(0.05)


@dataclass(frozen=True)
class Summary:
    """n values: their mean and sample standard deviation (nan when n < 2)."""

    n: int
    mean: float
    std: float


@dataclass(frozen=True)
class Paired:
    """Differences a_i - b_i over n pairs: mean, sample std, `confidence` t interval of the mean, the paired
    t-test (`p_value`: nan when every difference is the same non-zero value) and the exact sign-flip p-value;
    in a family of `family` > 1 comparisons with one baseline, both p-values Holm-adjusted over it as well."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    t: float
    p_value: float
    wilcoxon_p: float | None = None
    confidence: float = 0.95
    sign_flip_p: float = math.nan
    family: int = 1
    holm_p: float = math.nan
    holm_sign_flip_p: float = math.nan

    def ps(self) -> tuple[float, float]:
        """(t-test p, sign-flip p) that the verdict goes by: Holm-adjusted in a family, else each test's own."""
        return (self.holm_p, self.holm_sign_flip_p) if self.family > 1 else (self.p_value, self.sign_flip_p)


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


def no_spread(xs: Sequence[float]) -> bool:
    """True when all values are equal up to float rounding (RELATIVE_TOLERANCE of the largest |value|)."""
    xs = _floats(xs)
    return max(xs) - min(xs) <= RELATIVE_TOLERANCE * max(abs(x) for x in xs)


def t_critical(confidence: float, df: int) -> float:
    """The two-sided Student t quantile: P(|T| <= q) = confidence with df degrees of freedom."""
    from scipy import stats  # heavy; only the report needs it

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
    """(t, two-sided p) for 'the mean is 0'. With no spread (up to rounding): p = 1 when all values are 0, else
    t = ±inf and p = nan (t is undefined; p ~ 0 from n equal numbers would overstate the evidence)."""
    from scipy import stats  # heavy; only the report needs it

    xs = _floats(xs)
    n = len(xs)
    if n < 2:
        return (math.nan, math.nan)
    m, s = mean(xs), sample_std(xs)
    if no_spread(xs):
        return (0.0, 1.0) if m == 0.0 else (math.copysign(math.inf, m), math.nan)
    t = m / (s / math.sqrt(n))
    return (t, float(2.0 * stats.t.sf(abs(t), n - 1)))


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test of a against b: (t, two-sided p) on the differences a_i - b_i with n - 1 degrees of freedom."""
    return one_sample_t_test(paired_differences(a, b))


def _sign_sums(d: np.ndarray) -> np.ndarray:
    """The sums of ±d_i over all 2**len(d) sign patterns."""
    sums = np.zeros(1)
    for x in d:
        sums = np.concatenate([sums + x, sums - x])
    return sums


def sign_flip_p(d: Sequence[float]) -> float:
    """Exact two-sided p-value of the paired permutation (sign-flip) test of 'the mean difference is 0'.

    The share of the 2**n ways of flipping the signs of the differences d_i whose |sum| is at least the observed
    |sum| (equal up to float rounding counts as equal). The observed pattern and its mirror always count, so the
    p-value is at least 2 / 2**n: three differences of one sign give 2 / 8 = 0.25. Exact up to EXACT_MAX_N pairs
    (the sums of one half's patterns against the sorted sums of the other half's); estimated from
    MONTE_CARLO_DRAWS seeded random patterns above that.
    """
    d = np.asarray(_floats(d, "differences"), dtype=np.float64)
    n = d.size
    observed = abs(math.fsum(d))
    threshold = observed - RELATIVE_TOLERANCE * max(float(np.abs(d).sum()), 1e-300)
    if threshold <= 0.0:
        return 1.0  # every pattern's |sum| reaches a (near) zero observed sum
    if n > EXACT_MAX_N:
        signs = np.random.default_rng(0).choice((-1.0, 1.0), size=(MONTE_CARLO_DRAWS, n))
        hits = int((np.abs(signs @ d) >= threshold).sum())
        return (hits + 1) / (MONTE_CARLO_DRAWS + 1)
    left, right = _sign_sums(d[: n // 2]), np.sort(_sign_sums(d[n // 2:]))
    # |l + r| >= threshold (> 0): r >= threshold - l, or r <= -threshold - l (disjoint)
    upper = right.size - np.searchsorted(right, threshold - left, side="left")
    lower = np.searchsorted(right, -threshold - left, side="right")
    return float((upper + lower).sum()) / 2.0 ** n


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the paired differences (zeros dropped, exact when small);
    None when fewer than WILCOXON_MIN_N non-zero differences, where it could never reach 0.05."""
    from scipy import stats  # heavy; only the report needs it

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
                  wilcoxon_p=wilcoxon_p(a, b), confidence=confidence, sign_flip_p=sign_flip_p(d))


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the order given (Holm 1979, Scand. J. Statist. 6: 65-70).

    The m p-values sorted ascending, the i-th (from 1) is multiplied by m - i + 1, raised to its predecessor's
    adjusted value (step-down: the order is kept) and capped at 1. Calling significant only the adjusted p-values
    below alpha keeps the chance of any false claim in the family at alpha, whatever the tests' dependence;
    [0.01, 0.04, 0.03, 0.20] gives [0.04, 0.09, 0.09, 0.20]. None (no test) passes through and does not count in m.
    """
    given = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    if any(not 0.0 <= p <= 1.0 for p, _ in given):
        raise CbamlabError(f"p-values must be in [0, 1], got {[p for p in ps if p is not None]}")
    out, running = list(ps), 0.0
    for rank, (p, i) in enumerate(given):
        running = max(running, min(1.0, (len(given) - rank) * p))
        out[i] = running
    return out


def significant(pair: Paired, alpha: float = 0.05) -> bool:
    """Both the paired t-test and the exact sign-flip test below `alpha` (Holm-adjusted in a family): never on
    zero spread (t undefined), never with fewer than min_seeds(alpha) pairs (the sign-flip p cannot get there)."""
    t_p, flip_p = pair.ps()
    return pair.n >= 2 and not math.isnan(t_p) and t_p < alpha and not math.isnan(flip_p) and flip_p < alpha


def format_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def _ps(pair: Paired) -> str:
    """'t-test p = 0.07, sign-flip p = 0.25' (the t-test part left out when it is undefined), in a family
    'Holm-adjusted over 7: t-test p = 0.14, sign-flip p = 0.28'."""
    t_p, flip_p = pair.ps()
    text = f"sign-flip p = {format_p(flip_p)}"
    text = text if math.isnan(t_p) else f"t-test p = {format_p(t_p)}, {text}"
    return text if pair.family == 1 else f"Holm-adjusted over {pair.family}: {text}"


def verdict(name: str, baseline: str, pair: Paired, metric: str = "top-1", scale: float = 100.0,
            alpha: float = 0.05) -> str:
    """One plain sentence of what the paired data support, e.g.
    'resnet20_cbam +0.40 ± 0.30 points top-1 vs resnet20, not significant at n = 3 (t-test p = 0.41, sign-flip
    p = 0.25; fewer than 6 seeds can never reach p < 0.05).'
    The ± is the sample std of the per-seed differences; `scale` turns fractions into points."""
    m = pair.mean * scale
    if pair.n < 2:
        return (f"{name} {m:+.2f} points {metric} vs {baseline} from a single seed: no spread, no test; "
                f"run more seeds before reading anything into it.")
    sd = pair.std * scale
    head = f"{name} {m:+.2f} ± {sd:.2f} points {metric} vs {baseline}"
    need = min_seeds(alpha)
    few = f"; fewer than {need} seeds can never reach p < {alpha:g}" if pair.n < need else ""
    if math.isnan(pair.p_value):
        return (f"{head}, the same difference in every seed: no t-test is possible and nothing is called "
                f"significant at n = {pair.n} ({_ps(pair)}{few}).")
    if significant(pair, alpha):
        return f"{head}, significant at n = {pair.n} ({_ps(pair)})."
    return f"{head}, not significant at n = {pair.n} ({_ps(pair)}{few})."
