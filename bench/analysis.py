"""didray.analysis (lazy Polars) against the same computation in pandas, on synthetic results.

Builds ROWS synthetic step rows (trials of STEPS reported steps over 4 regimes x 5 betas) and
a trials table of ROWS rows, then times `entropy_vs_scores` (over the trials table) and
`dynamics` (over the step rows) against pandas code computing the same table. Data is built
in memory first; timings cover the computation only. Prints the median of --repeats runs, wall
and CPU seconds; asserts nothing (the target is < 2 s and >= 5x pandas on 2 cores).

    .venv/bin/python bench/analysis.py [--rows 10000000] [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from statistics import median

import numpy as np
import pandas as pd
import polars as pl

from didray.analysis.load import Results
from didray.analysis.stats import t_critical
from didray.analysis.tables import CURVES, DESCRIPTORS, KEYS, SCORES, dynamics, entropy_vs_scores

REGIMES = {"pg": ("pg", None, None), "offpolicy": ("offpolicy", None, None),
           "pl-sharp": ("powerlaw", 0.25, 0.1), "pl-flat": ("powerlaw", 4.0, 0.1)}
BETAS = (0.01, 0.05, 0.1, 0.5, 1.0)
STATUSES = ("TERMINATED", "ERROR", "RUNNING")


def axes(n: int, rng: np.random.Generator) -> pl.DataFrame:
    """n rows of (sweep, regime and its parameters, beta, seed) drawn uniformly."""
    names = list(REGIMES)
    regime = pl.Series("regime", names).gather(rng.integers(0, len(names), n))
    params = pl.DataFrame([(k, *v) for k, v in REGIMES.items()], orient="row",
                          schema=["regime", "regime_kind", "tau", "beta_data"])
    return (pl.DataFrame({"sweep": pl.repeat("bench", n, eager=True), "regime": regime,
                          "beta": np.asarray(BETAS)[rng.integers(0, len(BETAS), n)],
                          "seed": rng.integers(0, 1000, n)})
            .join(params, on="regime", how="left", maintain_order="left"))


def synthetic_trials(n: int, rng: np.random.Generator) -> pl.DataFrame:
    statuses = pl.Series("status", STATUSES).gather(rng.choice(3, n, p=[0.9, 0.05, 0.05]))
    frame = axes(n, rng).with_columns(statuses, trial_id=pl.format("t{}", pl.int_range(n)))
    return frame.with_columns(pl.Series(c, rng.normal(size=n)) for c in ("did_entropy", *SCORES))


def synthetic_steps(rows: int, steps: int, rng: np.random.Generator) -> tuple[pl.DataFrame,
                                                                               pl.DataFrame]:
    """(trials, steps): rows // steps trials, each reporting `steps` steps; the step rows
    carry only what `dynamics` reads, to keep two 10M-row copies (Polars, pandas) small."""
    trials = synthetic_trials(rows // steps, rng)
    per_step = (trials.select(*KEYS, "trial_id")
                .join(pl.DataFrame({"step": pl.int_range(1, steps + 1, eager=True)}),
                      how="cross"))
    metrics = {m: rng.normal(size=per_step.height) for m in CURVES}
    return trials, per_step.with_columns(pl.Series(k, v) for k, v in metrics.items())


def pandas_entropy_vs_scores(trials: pd.DataFrame) -> pd.DataFrame:
    done = trials["status"].eq("TERMINATED")
    work = trials[[*KEYS, *DESCRIPTORS]].assign(
        finished=done, failed=trials["status"].eq("ERROR"),
        **{c: trials[c].where(done) for c in ("did_entropy", *SCORES)})
    table = work.groupby(list(KEYS), sort=True).agg(
        **{c: (c, "first") for c in DESCRIPTORS}, trials=("finished", "size"),
        finished=("finished", "sum"), failed=("failed", "sum"),
        did_entropy=("did_entropy", "mean"), sd=("did_entropy", "std"),
        n=("did_entropy", "count"), **{s: (s, "mean") for s in SCORES})
    table["running"] = table["trials"] - table["finished"] - table["failed"]
    half = (table["n"].clip(lower=2).map(lambda n: t_critical(n - 1)) * table["sd"]
            / np.sqrt(table["n"]))
    table["did_entropy_ci_low"] = table["did_entropy"] - half
    table["did_entropy_ci_high"] = table["did_entropy"] + half
    return table.reset_index()


def pandas_dynamics(trials: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    merged = steps.merge(trials[["sweep", "trial_id", "status"]], on=["sweep", "trial_id"],
                         how="left")
    merged["finished"] = merged["status"].eq("TERMINATED")
    merged["failed"] = merged["status"].eq("ERROR")
    aggs = {f"{m}_{stat}": (m, stat) for m in CURVES for stat in ("mean", "std")}
    table = merged.groupby([*KEYS, "step"], sort=True).agg(
        trials=("finished", "size"), finished=("finished", "sum"), failed=("failed", "sum"),
        **aggs)
    table["running"] = table["trials"] - table["finished"] - table["failed"]
    return table.reset_index()


def seconds(function: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds (CPU time of all threads: on a shared machine it shows
    the work done when wall time also counts waiting for cores)."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return median(walls), median(cpus)


def entropy_case(rows: int, rng: np.random.Generator) -> tuple[Callable, Callable]:
    trials = synthetic_trials(rows, rng)
    frame = trials.to_pandas()
    return (lambda: entropy_vs_scores(Results.of(trials)),
            lambda: pandas_entropy_vs_scores(frame))


def dynamics_case(rows: int, steps: int, rng: np.random.Generator) -> tuple[Callable, Callable]:
    trials, per_step = synthetic_steps(rows, steps, rng)
    trials_pd, steps_pd = trials.to_pandas(), per_step.to_pandas()
    return (lambda: dynamics(Results.of(trials, per_step)),
            lambda: pandas_dynamics(trials_pd, steps_pd))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--steps", type=int, default=100, help="reported steps per trial")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = {"entropy_vs_scores": lambda: entropy_case(args.rows, rng),
             "dynamics": lambda: dynamics_case(args.rows, args.steps, rng)}
    rows = []
    for name, build in cases.items():
        polars_run, pandas_run = build()  # one case's data in memory at a time
        polars_run()  # warm-up: thread pool start, first allocations
        (fast, fast_cpu), (slow, slow_cpu) = (seconds(polars_run, args.repeats),
                                              seconds(pandas_run, args.repeats))
        rows.append({"computation": name, "rows": args.rows, "polars_s": fast,
                     "pandas_s": slow, "speedup": slow / fast, "polars_cpu_s": fast_cpu,
                     "pandas_cpu_s": slow_cpu, "cpu_speedup": slow_cpu / fast_cpu})
        del polars_run, pandas_run
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
                   float_precision=2, thousands_separator=",", tbl_width_chars=200):
        print(f"median of {args.repeats} runs, {pl.thread_pool_size()} Polars threads")
        print(pl.DataFrame(rows))


if __name__ == "__main__":
    main()
