"""Coverage of the 95% interval of the within-beta Spearman correlation, on simulated sweeps.

A sweep of G regimes x 3 betas x S seeds. Every trial of a regime shares the regime's
dataset, so DID entropy and score both carry a regime effect (u, v) common to its trials, plus
trial noise: x = u + e + beta, y = v + f - beta, var(u) = var(v) = ICC, var(e) = var(f) =
1 - ICC. Under the null u, v, e, f are independent; in the "correlated" case corr(u, v) = RHO,
so the true within-beta Spearman is (6 / pi) asin(RHO ICC / 2) (bivariate normal).

Three intervals per simulated sweep, each from 1000 resamples:
  old        trials resampled, ranks computed and centred once on the full sample, percentiles
             (didray before bench/intervals.py);
  units pct  regimes resampled, every resample re-ranked and re-centred, percentiles;
  new        the same resamples, atanh(r) +- t_{G-1} bootstrap sd (stats.unit_bootstrap).
Coverage is the fraction of `--reps` sweeps whose interval holds the true value; the null's
coverage is 1 - the rate of "supported"/"contradicted" verdicts the interval alone would give.
Prints a table; asserts nothing.

    .venv/bin/python bench/intervals.py [--reps 500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import polars as pl

from didray.analysis.stats import unit_bootstrap, within_correlations

SHAPES = {"experiment 6x3x3": (6, 3), "demo 3x3x1": (3, 1)}  # name: (regimes, seeds)
BETAS = 3
ICC = 0.5
RHO = 0.8
RESAMPLES = 1000


def sweep(rng: np.random.Generator, regimes: int, seeds: int, rho: float) -> tuple:
    """One simulated sweep: DID entropy, score, beta stratum and regime of every trial."""
    regime = np.repeat(np.arange(regimes), BETAS * seeds)
    beta = np.tile(np.repeat(np.arange(BETAS), seeds), regimes)
    effects = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], regimes) * np.sqrt(ICC)
    noise = rng.normal(size=(2, len(regime))) * np.sqrt(1 - ICC)
    return (effects[regime, 0] + noise[0] + beta, effects[regime, 1] + noise[1] - beta, beta,
            regime)


def old_interval(rng, x, y, beta) -> tuple[float, float]:
    """Ranks centred per beta once; trials resampled; Pearson of the reused centred ranks."""
    ones = np.ones((1, len(x)))
    ranks = [np.empty(len(x)), np.empty(len(x))]
    for b in np.unique(beta):
        for ranked, values in zip(ranks, (x, y), strict=True):
            r = np.argsort(np.argsort(values[beta == b])).astype(float)
            ranked[beta == b] = r - r.mean()
    counts = rng.multinomial(len(x), ones[0] / len(x), RESAMPLES)
    draws = within_correlations(ranks[0], ranks[1], np.zeros(len(x)), counts)[:, 0]
    return tuple(np.nanquantile(draws, [0.025, 0.975]))


def unit_percentiles(seed, x, y, beta, regime) -> tuple[float, float]:
    """The new resamples (the same draws as unit_bootstrap's), read by percentiles."""
    units = regime.max() + 1
    counts = np.random.default_rng(seed).multinomial(units, np.full(units, 1 / units),
                                                     RESAMPLES)
    draws = within_correlations(x, y, beta, counts[:, regime])[:, 1]
    return tuple(np.nanquantile(draws, [0.025, 0.975]))


def replicate(reps: int, regimes: int, seeds: int, rho: float) -> dict[str, float]:
    truth = 6 / np.pi * np.arcsin(rho * ICC / 2)
    rng = np.random.default_rng(regimes * 100 + seeds + int(rho * 10))
    hits = {"old": 0, "units pct": 0, "new": 0}
    widths = {"old": 0.0, "new": 0.0}
    for rep in range(reps):
        x, y, beta, regime = sweep(rng, regimes, seeds, rho)
        new = unit_bootstrap(x, y, beta, regime, RESAMPLES, seed=rep)
        intervals = {"old": old_interval(rng, x, y, beta),
                     "units pct": unit_percentiles(rep, x, y, beta, regime),
                     "new": (new["spearman_ci_low"], new["spearman_ci_high"])}
        for name, (low, high) in intervals.items():
            hits[name] += low <= truth <= high
            if name in widths:
                widths[name] += (high - low) / reps
    return {"true spearman": truth, **{f"{k} coverage": v / reps for k, v in hits.items()},
            **{f"{k} width": v for k, v in widths.items()}}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--reps", type=int, default=500)
    reps = args.parse_args().reps
    start = time.perf_counter()
    rows = [{"sweep": shape, "case": case,
             **replicate(reps, regimes, seeds, rho)}
            for shape, (regimes, seeds) in SHAPES.items()
            for case, rho in (("null", 0.0), ("correlated", RHO))]
    with pl.Config(tbl_rows=-1, tbl_cols=-1, float_precision=3, tbl_formatting="MARKDOWN",
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   tbl_width_chars=200):
        print(pl.DataFrame(rows))
    print(f"{reps} replications per row, {RESAMPLES} resamples each, ICC {ICC}, "
          f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
