"""Student-t critical values, and correlations within strata with a bootstrap over independent
units.

Sweeps have a handful of seeds per (beta, regime), where the normal 1.96 understates the
interval badly (t is 12.7 at 2 seeds), so intervals take the Student-t quantile
(`scipy.stats.t`). The same quantile, on units - 1 degrees of freedom, widens the
correlations' bootstrap intervals where a sweep has few independent datasets
(docs/design.md §3.6).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4096)  # tables ask once per row, for a handful of distinct df
def t_critical(df: int, level: float = 0.95) -> float:
    """Two-sided critical value: P(|T| < t) = level, for df >= 1 degrees of freedom."""
    if df < 1:  # scipy answers nan, which would print as an interval of nan
        raise ValueError(f"degrees of freedom must be >= 1 (got {df})")
    # Imported here: scipy.stats takes 0.6 s to import, and every didray command imports this.
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + level / 2, df))


# Correlations within strata, and their bootstrap over independent units

def within_correlations(x: np.ndarray, y: np.ndarray, stratum: np.ndarray,
                        weights: np.ndarray) -> np.ndarray:
    """Pearson and Spearman of `x` and `y` within strata, pooled, for each row of `weights`
    (resamples x trials: how many times each trial was drawn): shape (resamples, 2), NaN where
    a variable is constant in every stratum.

    Each stratum's values (for Spearman, their mid-ranks among the weighted trials: a trial
    drawn twice counts twice, tied with itself) are centred on the stratum's weighted mean,
    then the centred values of all strata are correlated, so every resample is re-ranked and
    re-centred as the point estimate is. With unit weights this is the Pearson of the centred
    values and of the centred ranks.
    """
    sums = np.zeros((2, 3, weights.shape[0]))  # (Pearson, Spearman) x (xy, xx, yy)
    for s in np.unique(stratum):
        w = weights[:, stratum == s]
        xs, ys = x[stratum == s], y[stratum == s]
        for k, (a, b) in enumerate(((xs, ys), (_midranks(xs, w), _midranks(ys, w)))):
            a, b = _centred(a, w), _centred(b, w)
            sums[k] += [(w * a * b).sum(1), (w * a * a).sum(1), (w * b * b).sum(1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = sums[:, 0] / np.sqrt(sums[:, 1] * sums[:, 2])
    return np.clip(r, -1.0, 1.0).T  # rounding past ±1


def _midranks(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Each value's average rank among the weighted values (ties share their mean rank)."""
    below = w @ (values[None, :] < values[:, None]).T
    tied = w @ (values[None, :] == values[:, None]).T
    return below + (tied + 1) / 2


def _centred(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """`values` (one per trial, or per resample and trial) less their weighted mean per
    resample; 0 in a resample that drew no trial of the stratum."""
    total = w.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * values).sum(1, keepdims=True) / total
    return np.where(total > 0, values - mean, 0.0)


# Below this many independent units the resamples cannot show a spread: two units per stratum
# always lie on a line, so every resample that is not constant repeats the point estimate.
MIN_INTERVAL_UNITS = 3
FISHER_CLIP = 1 - 1e-6  # atanh(±1) is infinite; a resample at ±1 counts as z = ±7.25


def unit_bootstrap(x: np.ndarray, y: np.ndarray, stratum: np.ndarray, unit: np.ndarray,
                   resamples: int = 1000, level: float = 0.95,
                   seed: int = 0) -> dict[str, float | None]:
    """`within_correlations` of the trials and, from `resamples` bootstrap resamples of the
    independent units (`unit`: integer codes 0..G-1; all trials of a drawn unit come along,
    in every stratum), an interval for each: atanh(r) +- t_{G-1} sd*(atanh r*), back through tanh.

    The bootstrap standard error on Fisher's z with a t quantile on G - 1 degrees of freedom
    rather than bootstrap percentiles: with 6 units the percentiles cover about 0.85 of the
    time, this 0.92-0.95 (bench/intervals.py, docs/design.md §3.6). Intervals are None below
    MIN_INTERVAL_UNITS units or when fewer than two resamples are defined.
    """
    units = int(unit.max()) + 1
    point = within_correlations(x, y, stratum, np.ones((1, len(x))))[0]
    out: dict[str, float | None] = {}
    for name, r in zip(("pearson", "spearman"), point, strict=True):
        out[name] = None if np.isnan(r) else float(r)
        out[f"{name}_ci_low"] = out[f"{name}_ci_high"] = None
    if units < MIN_INTERVAL_UNITS:
        return out
    counts = np.random.default_rng(seed).multinomial(units, np.full(units, 1 / units), resamples)
    draws = np.arctanh(np.clip(within_correlations(x, y, stratum, counts[:, unit]),
                               -FISHER_CLIP, FISHER_CLIP))
    half = t_critical(units - 1, level) * _finite_sd(draws)
    centre = np.arctanh(np.clip(point, -FISHER_CLIP, FISHER_CLIP))
    for k, name in enumerate(("pearson", "spearman")):
        if not np.isnan(half[k] + centre[k]):
            out[f"{name}_ci_low"] = float(np.tanh(centre[k] - half[k]))
            out[f"{name}_ci_high"] = float(np.tanh(centre[k] + half[k]))
    return out


def _finite_sd(draws: np.ndarray) -> np.ndarray:
    """Per column, the standard deviation of the defined (non-NaN) draws; NaN below two."""
    defined = [column[~np.isnan(column)] for column in draws.T]
    return np.array([d.std(ddof=1) if len(d) >= 2 else np.nan for d in defined])
