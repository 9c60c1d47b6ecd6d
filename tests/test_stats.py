"""lab.stats against values computed independently here (textbook formulas, scipy where the
formula needs a distribution), for fixed numbers: n = 1, n = 2, equal variances, zero variance."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as sp

from lab.formatting import fmt_comparison, fmt_interval, fmt_p
from lab.stats import (
    NO_VARIANCE,
    ONE_SEED,
    PAIRED,
    WELCH,
    claim_verdict,
    compare,
    holm,
    mean_interval,
    paired_test,
    seeds_needed,
    vs_best_verdict,
    welch_test,
)

A = [1.5531, 1.5602, 1.5488]
B = [1.5560, 1.5655, 1.5611, 1.5590]


def test_mean_interval_three_values_is_student_t_with_n_minus_1_df():
    m, s = statistics.fmean(A), statistics.stdev(A)
    half = sp.t.ppf(0.975, 2) * s / math.sqrt(3)  # t(0.975, 2) = 4.3027
    got = mean_interval(A)
    assert got.n == 3 and got.note is None
    assert got.mean == pytest.approx(m, abs=1e-12) and got.std == pytest.approx(s, abs=1e-12)
    assert (got.low, got.high) == (pytest.approx(m - half, abs=1e-12), pytest.approx(m + half, abs=1e-12))


def test_mean_interval_two_values_uses_one_degree_of_freedom():
    got = mean_interval([1.0, 2.0])
    # mean 1.5, sd 0.7071, se 0.5, t(0.975, 1) = 12.7062
    assert got.low == pytest.approx(1.5 - 12.7062047 * 0.5, abs=1e-6)
    assert got.high == pytest.approx(1.5 + 12.7062047 * 0.5, abs=1e-6)


def test_mean_interval_one_seed_has_no_interval_and_says_so():
    got = mean_interval([1.55, None, float("nan")])
    assert (got.mean, got.std, got.n, got.low, got.high) == (1.55, None, 1, None, None)
    assert got.note == ONE_SEED
    assert mean_interval([]).n == 0 and mean_interval([]).mean is None


def test_mean_interval_zero_variance():
    got = mean_interval([1.5, 1.5, 1.5])
    assert (got.std, got.low, got.high, got.note) == (0.0, 1.5, 1.5, NO_VARIANCE)


def test_welch_matches_the_welch_satterthwaite_formula():
    ma, mb = statistics.fmean(A), statistics.fmean(B)
    va, vb = statistics.variance(A), statistics.variance(B)
    se = math.sqrt(va / 3 + vb / 4)
    df = (va / 3 + vb / 4) ** 2 / ((va / 3) ** 2 / 2 + (vb / 4) ** 2 / 3)
    t = (ma - mb) / se
    p = 2 * sp.t.sf(abs(t), df)
    half = sp.t.ppf(0.975, df) * se
    got = welch_test(A, B)
    assert got.test == WELCH and (got.n_a, got.n_b) == (3, 4)
    assert got.diff == pytest.approx(ma - mb, abs=1e-12)
    assert got.p == pytest.approx(p, rel=1e-9)
    assert got.low == pytest.approx(ma - mb - half, rel=1e-9)
    assert got.high == pytest.approx(ma - mb + half, rel=1e-9)


def test_welch_with_equal_variances_equals_the_pooled_t_test_for_equal_n():
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]  # equal variances (1) and n: Welch df = 4 = pooled df
    t = -1.0 / math.sqrt(1 / 3 + 1 / 3)
    got = welch_test(a, b)
    assert got.p == pytest.approx(2 * sp.t.sf(abs(t), 4), rel=1e-12)
    assert got.high - got.diff == pytest.approx(sp.t.ppf(0.975, 4) * math.sqrt(2 / 3), rel=1e-12)


def test_welch_n_equal_2_on_both_sides():
    got = welch_test([1.0, 1.2], [1.5, 1.9])
    se = math.sqrt(0.02 / 2 + 0.08 / 2)
    df = (0.05) ** 2 / ((0.01) ** 2 / 1 + (0.04) ** 2 / 1)
    assert got.p == pytest.approx(2 * sp.t.sf(0.6 / se, df), rel=1e-9)


def test_one_seed_on_a_side_gives_the_difference_and_no_test():
    got = welch_test([1.50], B)
    assert got.diff == pytest.approx(1.50 - statistics.fmean(B))
    assert (got.low, got.high, got.p, got.test, got.note) == (None, None, None, None, ONE_SEED)


def test_zero_variance_on_both_sides_gives_the_difference_and_no_p():
    got = welch_test([1.5, 1.5], [1.6, 1.6])
    assert got.diff == pytest.approx(-0.1) and got.p is None and got.note == NO_VARIANCE
    assert vs_best_verdict(got) == NO_VARIANCE
    # One side constant: Welch still has a finite statistic.
    assert welch_test([1.5, 1.5, 1.5], [1.6, 1.7, 1.65]).p is not None


def test_paired_test_when_both_rows_share_their_seeds():
    a, b = [1.55, 1.56, 1.54], [1.56, 1.575, 1.552]
    d = [x - y for x, y in zip(a, b)]
    t = statistics.fmean(d) / (statistics.stdev(d) / math.sqrt(3))
    got = compare(a, b, keys_a=[1, 2, 3], keys_b=[1, 2, 3])
    assert got.test == PAIRED
    assert got.p == pytest.approx(2 * sp.t.sf(abs(t), 2), rel=1e-9)
    # Keys are matched by value, not position.
    assert compare(a, list(reversed(b)), [1, 2, 3], [3, 2, 1]).p == pytest.approx(got.p, rel=1e-12)
    # Different seeds: Welch.
    assert compare(a, b, [1, 2, 3], [4, 5, 6]).test == WELCH
    assert paired_test([1.0, 2.0], [1.5, 2.5]).note == NO_VARIANCE  # constant differences


def test_holm_against_the_step_down_definition():
    ps = [0.01, None, 0.04, 0.03, 0.2]
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> max with previous 0.09, 0.2*1 -> 0.2
    assert holm(ps) == [pytest.approx(0.04), None, pytest.approx(0.09), pytest.approx(0.09), pytest.approx(0.2)]
    assert holm([0.6, 0.7]) == [1.0, pytest.approx(1.0)]
    assert holm([]) == []


def test_seeds_needed_reaches_80_percent_power():
    # d = 1: the textbook two-sample answer is 17 per group (noncentral t, alpha 0.05).
    n = seeds_needed(0.005, 0.005)
    assert n == 17
    def power(n, df, nc):
        crit = sp.t.ppf(0.975, df)
        return sp.nct.sf(crit, df, nc) + sp.nct.cdf(-crit, df, nc)
    assert power(n, 2 * n - 2, math.sqrt(n / 2)) >= 0.8 > power(n - 1, 2 * n - 4, math.sqrt((n - 1) / 2))
    assert seeds_needed(0.005, 0.005, paired=True) == 10
    assert seeds_needed(0.0, 0.005) is None and seeds_needed(0.01, 0.0) is None
    assert seeds_needed(1e-6, 1.0) is None  # beyond the limit


def test_verdict_words():
    worse = welch_test([1.60, 1.61, 1.62], [1.50, 1.51, 1.52])
    assert vs_best_verdict(worse) == "worse"
    assert vs_best_verdict(welch_test([1.5, 1.6, 1.55], [1.5, 1.6, 1.56])) == "n.s."
    assert vs_best_verdict(worse, is_best=True) == "best"
    assert claim_verdict(-0.01, 0.01) == "supported"
    assert claim_verdict(+0.01, 0.01) == "contradicted"
    assert claim_verdict(-0.01, 0.2) == "inconclusive"
    assert claim_verdict(-0.01, None) == "inconclusive"


def test_spellings():
    assert fmt_p(0.1234) == "p=0.12" and fmt_p(0.0344) == "p=0.034" and fmt_p(0.0004) == "p<0.001"
    assert fmt_p(None) == ""
    assert fmt_interval(-0.0012, 0.0094) == "[-0.0012, +0.0094]"
    assert fmt_interval(1.548, 1.5612, signed=False) == "[1.5480, 1.5612]"
    assert fmt_comparison(0.0041, -0.0012, 0.0094, 0.1234, "n.s.") == "+0.0041 [-0.0012, +0.0094] p=0.12 n.s."
    assert fmt_comparison(-0.1, None, None, None, "no variance") == "-0.1000 no variance"


def test_welch_and_paired_agree_with_scipy_stats():
    w = welch_test(A, B)
    ref = sp.ttest_ind(A, B, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert (w.p, w.low, w.high) == (pytest.approx(ref.pvalue, rel=1e-9), pytest.approx(ci.low, rel=1e-9),
                                    pytest.approx(ci.high, rel=1e-9))
    a, b = A, B[:3]
    pr = paired_test(a, b)
    ref = sp.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert (pr.p, pr.low, pr.high) == (pytest.approx(ref.pvalue, rel=1e-9), pytest.approx(ci.low, rel=1e-9),
                                       pytest.approx(ci.high, rel=1e-9))
