"""Tables over a sweep's trials.parquet (lazy Polars, one collect per table)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

SCORES = ("did_entropy", "instruction_score", "instruction_winrate", "qa_accuracy",
          "chosen_displacement", "rejected_displacement", "reward_accuracy")


def entropy_vs_scores(trials: pl.LazyFrame) -> pl.DataFrame:
    """One row per (beta, regime): finished/failed trial counts and mean scores over seeds.

    Trials that failed or are still running are counted, never dropped silently; their
    scores (absent) do not enter the means.
    """
    names = trials.collect_schema().names()
    done = pl.col("status") == "TERMINATED"
    aggs = [pl.len().alias("trials"), done.sum().alias("finished"),
            (pl.col("status") == "ERROR").sum().alias("failed")]
    aggs += [pl.col(c).filter(done).mean().alias(c) for c in SCORES if c in names]
    keys = [k for k in ("regime", "regime_kind", "tau", "beta") if k in names]
    return trials.group_by(keys).agg(aggs).sort(keys).collect()


def load_trials(sweep_dir: Path) -> pl.LazyFrame:
    return pl.scan_parquet(sweep_dir / "trials.parquet")
