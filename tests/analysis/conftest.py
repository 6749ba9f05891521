"""Hand-built sweep results with known answers: a partial sweep (one failed, one running trial)
over two regimes, written as a results directory on demand."""

from pathlib import Path

import polars as pl
import pytest
from support.judged import judge_frame

from didray.analysis.load import Results
from didray.sweep.results import write_parquet

# (trial_id, regime, beta, seed, status, did_entropy, instruction_score, qa_accuracy)
TRIALS = [
    ("t0", "pg", 0.1, 0, "TERMINATED", 1.0, 0.5, 1.0),
    ("t1", "pg", 0.1, 1, "TERMINATED", 2.0, 0.6, 0.0),
    ("t2", "pg", 0.1, 2, "TERMINATED", 3.0, 0.7, 1.0),
    ("t3", "pg", 0.5, 0, "TERMINATED", 4.0, 0.8, 0.0),
    ("t4", "pg", 0.5, 1, "ERROR", None, None, None),
    ("t5", "pg", 0.5, 2, "RUNNING", None, None, None),
    ("t6", "pl", 0.1, 0, "TERMINATED", 5.0, 0.9, 0.0),
    ("t7", "pl", 0.1, 1, "TERMINATED", 7.0, 1.0, 0.0),
]


def trials_frame() -> pl.DataFrame:
    """trials.parquet as the sweep writes it (no eval columns for the failed/running trials;
    only some of the optional columns present)."""
    frame = pl.DataFrame(TRIALS, orient="row", schema=[
        "trial_id", "regime", "beta", "seed", "status", "did_entropy", "instruction_score",
        "qa_accuracy"])
    kind = pl.when(pl.col("regime") == "pg").then(pl.lit("pg")).otherwise(pl.lit("powerlaw"))
    powerlaw = pl.col("regime") == "pl"
    return frame.with_columns(
        regime_kind=kind, tau=pl.when(powerlaw).then(0.5), beta_data=pl.when(powerlaw).then(0.1),
        step=pl.when(pl.col("status") == "RUNNING").then(1).otherwise(2),
        error=pl.when(pl.col("status") == "ERROR").then(pl.lit("boom")),
        chosen_displacement=pl.col("did_entropy") * -1,
        did_entropy_exact=pl.col("did_entropy"),  # a toy sweep: did_entropy is exact
        did_entropy_estimator=pl.when(pl.col("did_entropy").is_not_null()).then(pl.lit("exact")),
        **{"final/loss": pl.lit(0.5)})


def steps_frame() -> pl.DataFrame:
    """Two reported steps per trial (the running one reported step 1 only); loss = step +
    seed / 10 so means over seeds are known."""
    rows = [(t, regime, beta, seed, step, step + seed / 10, None if step == 1 else 4.0 - seed)
            for t, regime, beta, seed, status, *_ in TRIALS
            for step in (1, 2) if not (status == "RUNNING" and step == 2)]
    return pl.DataFrame(rows, orient="row", schema=[
        "trial_id", "regime", "beta", "seed", "step", "loss", "did/entropy"])


@pytest.fixture
def results() -> Results:
    return Results.of(trials_frame(), steps_frame(), sweep="s")


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A results directory `<tmp>/partial/` holding the hand-built trials and steps."""
    path = tmp_path / "partial"
    path.mkdir()
    trials_frame().write_parquet(path / "trials.parquet")
    steps_frame().write_parquet(path / "steps.parquet")
    return path


@pytest.fixture
def sealed_sweep_dir(tmp_path: Path) -> Path:
    """The same tables written as a sweep writes them: each sealed with its size and sha256."""
    path = tmp_path / "sealed"
    write_parquet(trials_frame(), path / "trials.parquet")
    write_parquet(steps_frame(), path / "steps.parquet")
    return path


@pytest.fixture
def judge_sweep_dir(tmp_path: Path) -> Path:
    """A results directory `<tmp>/judged/` of `judge_frame(0.5)`."""
    path = tmp_path / "judged"
    path.mkdir()
    judge_frame(0.5).write_parquet(path / "trials.parquet")
    return path
