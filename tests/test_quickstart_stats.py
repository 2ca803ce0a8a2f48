"""The quickstart's error bars against independent computations on fixed data: scipy's paired t-test interval,
numpy's mean / std / least squares, and the answer rule on intervals on either side of zero."""
import numpy as np
import pytest
from scipy import stats as sps

from liquid_train.quickstart.stats import answer, both, linear_fit, mean_std, paired_difference

A = [0.61, 0.55, 0.58, 0.64]
B = [0.50, 0.48, 0.51, 0.55]


def test_paired_interval_equals_scipys_paired_t_test():
    d = paired_difference(A, B)
    ci = sps.ttest_rel(A, B).confidence_interval(0.95)
    assert d.n == 4
    assert d.mean == pytest.approx(np.mean(np.subtract(A, B)), abs=1e-12)
    assert d.std == pytest.approx(np.std(np.subtract(A, B), ddof=1), abs=1e-12)
    assert (d.low, d.high) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))
    assert d.boot_low <= d.mean <= d.boot_high
    assert min(np.subtract(A, B)) <= d.boot_low and d.boot_high <= max(np.subtract(A, B))


def test_mean_std_is_numpys_with_ddof_1():
    assert mean_std(A) == (pytest.approx(np.mean(A)), pytest.approx(np.std(A, ddof=1)))
    assert mean_std([0.3]) == (0.3, None)


def test_answer_is_read_from_the_interval():
    assert answer(paired_difference(A, B)) == "yes"  # all four differences positive, CI above 0
    assert answer(paired_difference(B, A)) == "no"
    noisy = paired_difference([0.5, 0.7, 0.4], [0.6, 0.5, 0.45])  # mean +0.017, spread 0.1
    assert noisy.low < 0 < noisy.high and answer(noisy) == "inconclusive"
    one = paired_difference([0.5], [0.4])
    assert one.low is None and answer(one) == "yes (1 seed)" and "1 seed" in one.describe()
    assert answer(paired_difference([0.4], [0.5])) == "no (1 seed)"


def test_constant_differences_give_a_zero_width_interval():
    d = paired_difference([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])
    assert d.low == pytest.approx(0.1) and d.high == pytest.approx(0.1) and answer(d) == "yes"


def test_combined_answers():
    assert both(["yes", "yes"]) == "yes"
    assert both(["yes", "inconclusive"]) == "inconclusive"
    assert both(["inconclusive", "no"]) == "no"
    assert both(["yes (1 seed)", "yes (1 seed)"]) == "yes (1 seed)"


def test_unpaired_input_is_refused():
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1.0, 2.0], [1.0])


def test_linear_fit_matches_numpy_least_squares():
    x = np.array([1.2, 1.0, 0.9, 0.8, 0.7])
    y = np.array([0.20, 0.31, 0.35, 0.46, 0.52])
    fit = linear_fit(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    r2 = 1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert fit["slope"] == pytest.approx(slope) and fit["intercept"] == pytest.approx(intercept)
    assert fit["r2"] == pytest.approx(r2) and fit["n"] == 5
