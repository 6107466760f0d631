"""The Holm-Bonferroni correction over a family of comparisons with one baseline: adjusted p-values against hand
computation and against Holm's step-down procedure itself, the families a table forms (3 or more comparisons
with one baseline; 1 or 2 left as they were), and the verdict that goes by the adjusted p-values."""
import math

import numpy as np
import pytest

from cbamlab.errors import CbamlabError
from cbamlab.report import stats, tables


@pytest.mark.parametrize("ps, adjusted", [
    ([0.01, 0.04, 0.03, 0.20], [0.04, 0.09, 0.09, 0.20]),  # x4, x3, x2 (raised to 0.09: monotone), x1
    ([None, 0.01, None, 0.04, 0.03, 0.20], [None, 0.04, None, 0.09, 0.09, 0.20]),  # None: passed, not counted
    ([0.5, 0.6], [1.0, 1.0]),  # 2 x 0.5 = 1, and 0.6 raised to it: capped at 1
    ([0.02, 0.02, 0.02], [0.06, 0.06, 0.06]),  # ties: 3 x 0.02 for all
    ([0.03], [0.03]),
    ([0.001, 0.5, 0.013, 0.02], [0.004, 0.5, 0.039, 0.04]),  # 4 x 0.001, 3 x 0.013, 2 x 0.02, 0.5
    ([], []),
    ([None], [None]),
])
def test_holm_hand_computed(ps, adjusted):
    out = stats.holm(ps)
    assert [a is None for a in out] == [a is None for a in adjusted]
    assert [a for a in out if a is not None] == pytest.approx([a for a in adjusted if a is not None], abs=1e-12)


@pytest.mark.parametrize("bad", [[0.1, float("nan")], [-0.01], [1.2]])
def test_holm_refuses_what_is_not_a_p_value(bad):
    with pytest.raises(CbamlabError, match=r"p-values must be in \[0, 1\]"):
        stats.holm(bad)


def step_down_rejects(ps, alpha):
    """Holm's procedure at level alpha: reject the ascending p_(k) while p_(k) <= alpha / (m - k + 1)."""
    rejected = set()
    for k, i in enumerate(sorted(range(len(ps)), key=lambda j: ps[j])):
        if ps[i] > alpha / (len(ps) - k):
            break
        rejected.add(i)
    return rejected


def test_holm_properties_on_random_families():
    """Adjusted >= raw, <= 1, order-preserving, and 'adjusted p <= alpha' exactly where the step-down procedure
    at alpha rejects (the adjusted p is the smallest level at which Holm rejects that hypothesis)."""
    rng = np.random.default_rng(26)
    for _ in range(300):
        m = int(rng.integers(1, 12))
        ps = [float(p) for p in rng.uniform(0, 1, m) ** rng.uniform(0.5, 4)]  # many small ps
        if rng.uniform() < 0.3:
            ps[-1] = ps[0]  # a tie
        adj = stats.holm(ps)
        assert all(p <= a <= 1.0 for p, a in zip(ps, adj))
        assert all(adj[i] <= adj[j] for i in range(m) for j in range(m) if ps[i] <= ps[j])
        for alpha in rng.uniform(0, 0.3, 5):
            assert {i for i in range(m) if adj[i] <= alpha} == step_down_rejects(ps, alpha)


def pair(p_value, sign_flip_p, n=10, mean=0.003):
    return stats.Paired(n=n, mean=mean, std=0.004, ci_low=0.0, ci_high=0.006, t=2.0, p_value=p_value,
                        sign_flip_p=sign_flip_p)


def test_families_of_three_or_more_are_adjusted_and_of_two_are_left_alone():
    a, b, c = pair(0.02, 0.04), pair(0.30, 0.40), pair(0.60, 0.70)
    x, y = pair(0.01, 0.02), pair(0.50, 0.60)
    out = tables.holm_families([("base", a), ("other", x), ("base", b), (None, None), ("other", y), ("base", c)])
    assert out[1] is x and out[4] is y and out[3] is None  # a family of 2, and no comparison: unchanged
    adj_a, adj_b, adj_c = out[0], out[2], out[5]
    assert [p.family for p in (adj_a, adj_b, adj_c)] == [3, 3, 3]
    assert (adj_a.p_value, adj_a.sign_flip_p) == (0.02, 0.04)  # the raw values stay
    assert [p.holm_p for p in (adj_a, adj_b, adj_c)] == pytest.approx([0.06, 0.60, 0.60])
    assert [p.holm_sign_flip_p for p in (adj_a, adj_b, adj_c)] == pytest.approx([0.12, 0.80, 0.80])
    assert stats.significant(a) and not stats.significant(adj_a)  # both raw < 0.05; adjusted, not
    assert stats.significant(x) and out[1].ps() == (0.01, 0.02)


def test_an_undefined_t_test_counts_in_its_family_and_stays_undefined():
    out = tables.holm_families([("b", pair(math.nan, 0.002)), ("b", pair(0.01, 0.01)), ("b", pair(0.2, 0.3))])
    assert math.isnan(out[0].holm_p) and out[0].holm_sign_flip_p == pytest.approx(0.006)
    assert out[1].holm_p == pytest.approx(0.03)  # 0.01 x 3: the undefined p counted (as 1, ranked last)
    assert not stats.significant(out[0])


def test_the_verdict_goes_by_the_adjusted_p_values():
    six = stats.paired_comparison([0.91, 0.93, 0.92, 0.95, 0.92, 0.94], [0.90, 0.90, 0.90, 0.90, 0.90, 0.90])
    assert stats.significant(six)
    far = stats.paired_comparison([0.90, 0.92, 0.89, 0.91, 0.90, 0.88], [0.90, 0.90, 0.90, 0.90, 0.90, 0.90])
    adjusted = tables.holm_families([("y", six), ("y", far), ("y", far)])[0]
    assert adjusted.holm_sign_flip_p == pytest.approx(3 * 2 / 64) and adjusted.holm_p == pytest.approx(
        3 * six.p_value)
    assert not stats.significant(adjusted)
    assert stats.verdict("x", "y", adjusted) == (
        f"x +2.83 ± 1.47 points top-1 vs y, not significant at n = 6 (Holm-adjusted over 3: t-test p = "
        f"{stats.format_p(3 * six.p_value)}, sign-flip p = 0.09).")


def test_the_column_and_the_note_appear_only_with_an_adjusted_family():
    header = ["variant", "p (paired t)", "p (sign-flip)", "params"]
    body = [["a", "0.02", "0.04", "1 k"], ["b", "0.30", "0.40", "1 k"], ["c", "0.60", "0.70", "1 k"],
            ["base", "", "", "1 k"]]
    raw = [pair(0.02, 0.04), pair(0.30, 0.40), pair(0.60, 0.70), None]
    assert tables.holm_column(header, body, raw) == (header, body)
    assert tables.holm_note([("base", p) for p in raw]) == []
    adjusted = tables.holm_families([("base", p) for p in raw[:3]]) + [None]
    new_header, new_body = tables.holm_column(header, body, adjusted)
    assert new_header == ["variant", "p (paired t)", "p (sign-flip)", tables.HOLM_COLUMN, "params"]
    assert [r[3] for r in new_body] == ["0.12", "0.80", "0.80", ""]
    (note,) = tables.holm_note([("base", p) for p in adjusted])
    assert note.startswith("p-values are Holm-adjusted over the 3 comparisons with base in p (Holm, sign-flip)")
