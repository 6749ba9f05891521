"""t critical values (closed forms at 1 and 2 degrees of freedom, printed tables, a property
elsewhere) and the weighted within-strata correlations the bootstrap resamples."""

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from didray.analysis.stats import t_critical, within_correlations


def test_closed_forms():
    assert t_critical(1) == pytest.approx(math.tan(0.95 * math.pi / 2), rel=1e-12)
    assert t_critical(2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95**2)), rel=1e-12)
    assert t_critical(1, 0.5) == pytest.approx(1.0, rel=1e-12)  # the Cauchy quartile
    assert t_critical(4) == pytest.approx(2.7764451051977987, rel=1e-10)  # tables


@pytest.mark.parametrize(("df", "level", "printed"), [
    (1, 0.95, 12.706205), (2, 0.95, 4.302653), (4, 0.95, 2.776445), (10, 0.99, 3.169273),
    (30, 0.90, 1.697261), (120, 0.95, 1.979930), (2000, 0.95, 1.961151)])
def test_two_sided_quantiles_of_the_printed_tables(df, level, printed):
    """t_{(1 + level)/2, df}: the two-sided level's upper quantile, not the one-sided."""
    assert t_critical(df, level) == pytest.approx(printed, abs=1e-6)


@given(st.integers(1, 3000))
def test_critical_value_shrinks_to_normal(df):
    assert NormalDist().inv_cdf(0.975) < t_critical(df) <= t_critical(max(df - 1, 1))


def test_rejects_no_degrees_of_freedom():
    with pytest.raises(ValueError, match=">= 1"):
        t_critical(0)


def test_a_trial_drawn_twice_counts_twice_and_ties_with_itself():
    """(1, 1), (2, 3), (3, 2): Spearman 0.5. Drawn 2, 1, 0 times: (1, 1) twice and (2, 3),
    mid-ranks 1.5, 1.5, 3 on both sides: 1. Drawn 0, 1, 2 times: x ranks 1, 2.5, 2.5 against
    y ranks 3, 1.5, 1.5: -1. A draw of one value only is undefined."""
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])
    weights = np.array([[1, 1, 1], [2, 1, 0], [0, 1, 2], [3, 0, 0]])
    spearman = within_correlations(x, y, np.zeros(3), weights)[:, 1]
    assert spearman[:3] == pytest.approx([0.5, 1.0, -1.0])
    assert np.isnan(spearman[3])
