"""Scan one or more results directories into lazy frames with declared schemas.

A results directory grows while its sweep runs (a trial that failed has an `error` column and no
evaluation, a running one has no evaluation yet, no trial may have reported a step), so every
frame is cast to a declared schema: absent optional columns become typed nulls and every
transform downstream can name them unconditionally. Several sweeps load together, told apart
by a `sweep` column holding the directory name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from didray.errors import BadInput

AXES: dict[str, pl.DataType] = {
    "sweep": pl.String(), "trial_id": pl.String(), "beta": pl.Float64(), "regime": pl.String(),
    "seed": pl.Int64(), "regime_kind": pl.String(), "tau": pl.Float64(),
    "beta_data": pl.Float64(),
}
STEP_METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
                "rewards/accuracies", "logps/chosen", "logps/rejected", "did/entropy",
                "eval/instruction_score", "eval/qa_accuracy")
EVAL_METRICS = ("did_entropy", "did_entropy_open", "did_entropy_fact", "instruction_score",
                "instruction_winrate", "qa_accuracy", "qa_expected", "chosen_displacement",
                "rejected_displacement", "dpo_loss", "reward_accuracy")
TRIALS_SCHEMA = pl.Schema({
    **AXES, "status": pl.String(), "step": pl.Int64(), "node_id": pl.String(),
    "error": pl.String(),
    **{f"final/{m}": pl.Float64() for m in STEP_METRICS},
    **{m: pl.Float64() for m in EVAL_METRICS},
})
STEPS_SCHEMA = pl.Schema({
    **AXES, "step": pl.Int64(), "node_id": pl.String(),
    **{m: pl.Float64() for m in STEP_METRICS},
})
ESTIMATE_COLUMNS: dict[str, pl.DataType] = {
    "sweep": pl.String(), "trial_id": pl.String(), "step": pl.Int64(), "metric": pl.String(),
    "estimator": pl.String(), "k": pl.Int64(), "proposal": pl.String(),
    "estimate": pl.Float64(), "ci_low": pl.Float64(), "ci_high": pl.Float64(),
    "exact": pl.Float64(),
}
EVALS_SCHEMA = pl.Schema({**AXES, **ESTIMATE_COLUMNS})
FILES = ("trials.parquet", "steps.parquet", "evals.parquet")


@dataclass(frozen=True)
class Results:
    """The lazy tables of one or more sweeps.

    trials: one row per trial (TRIALS_SCHEMA). steps: one row per reported step (STEPS_SCHEMA).
    evals: long form, one row per (trial, metric, estimator) (EVALS_SCHEMA): every evaluation
    column of trials.parquet as `estimator="exact"` rows (estimate = exact = the value, k and
    proposal null), plus the rows of evals.parquet where a sweep wrote one (DID-entropy
    estimates; its `metric` defaults to "did_entropy").
    """

    trials: pl.LazyFrame
    steps: pl.LazyFrame
    evals: pl.LazyFrame

    @classmethod
    def of(cls, trials: pl.LazyFrame | pl.DataFrame,
           steps: pl.LazyFrame | pl.DataFrame | None = None,
           estimates: pl.LazyFrame | pl.DataFrame | None = None,
           sweep: str = "memory") -> Results:
        """Results from frames in memory (tests, benchmarks), conformed like `load` does;
        a frame without a `sweep` column is named `sweep`."""
        trials = conform(_named(trials.lazy(), sweep), TRIALS_SCHEMA)
        steps = conform(pl.LazyFrame() if steps is None else _named(steps.lazy(), sweep),
                        STEPS_SCHEMA)
        extra = (None if estimates is None
                 else conform(_named(estimates.lazy(), sweep), ESTIMATE_COLUMNS))
        return cls(trials, steps, _evals(trials, extra))


def _named(frame: pl.LazyFrame, sweep: str) -> pl.LazyFrame:
    """`frame` with a `sweep` column, `sweep` where it had none."""
    if "sweep" in frame.collect_schema().names():
        return frame
    return frame.with_columns(sweep=pl.lit(sweep))


def conform(frame: pl.LazyFrame, schema: Mapping[str, pl.DataType]) -> pl.LazyFrame:
    """`frame` with exactly `schema`'s columns, in order: cast, or typed nulls where absent.

    A frame that has none of the columns (a Parquet file written before any row existed)
    becomes an empty frame, not one row of nulls.
    """
    names = set(frame.collect_schema().names())
    if not names & set(schema):
        return pl.LazyFrame(schema=dict(schema))
    return frame.select([pl.col(name).cast(dtype) if name in names
                         else pl.lit(None, dtype).alias(name)
                         for name, dtype in schema.items()])


def _evals(trials: pl.LazyFrame, estimates: pl.LazyFrame | None) -> pl.LazyFrame:
    """Long-form evaluations: the exact values of trials.parquet plus any estimate rows."""
    exact = (trials.unpivot(on=list(EVAL_METRICS), index=[*AXES, "step"], variable_name="metric",
                            value_name="estimate")
             .drop_nulls("estimate")
             .with_columns(estimator=pl.lit("exact"), exact=pl.col("estimate")))
    frames = [conform(exact, EVALS_SCHEMA)]
    if estimates is not None:
        axes = trials.select(*AXES)
        joined = (estimates.with_columns(pl.col("metric").fill_null("did_entropy"))
                  .join(axes, on=["sweep", "trial_id"], how="left", maintain_order="left"))
        frames.append(conform(joined, EVALS_SCHEMA))
    return pl.concat(frames, how="vertical")


def _check_parquet(path: Path) -> None:
    """Read the footer now so a truncated or foreign file fails here, named, not mid-query."""
    try:
        pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInput(f"{path}: not a readable Parquet file ({reason})") from None


def _scan(path: Path, schema: Mapping[str, pl.DataType], sweep: str) -> pl.LazyFrame:
    _check_parquet(path)
    return conform(pl.scan_parquet(path).with_columns(sweep=pl.lit(sweep)), schema)


def _sweep_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """The results directories, each checked to hold a trials.parquet, names distinct."""
    dirs = [Path(p) for p in paths]
    if not dirs:
        raise BadInput("no results directory given")
    for path in dirs:
        if not path.is_dir():
            raise BadInput(f"{path}: no such results directory")
        if not (path / "trials.parquet").is_file():
            raise BadInput(f"{path}: no results here (no trials.parquet; is it a sweep's "
                           "<storage>/<name>/ directory, and has a trial started?)")
    names = [p.resolve().name for p in dirs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise BadInput(f"results directories share the name {clash[0]!r}: sweeps are told apart "
                       "by directory name, so load them under distinct names")
    return dirs


def load(paths: str | Path | Iterable[str | Path]) -> Results:
    """Results of one or more sweep directories (`<storage>/<name>/`), lazily scanned.

    Raises BadInput naming the directory or file when a path holds no results or a Parquet
    file cannot be read.
    """
    dirs = _sweep_dirs([paths] if isinstance(paths, str | Path) else paths)
    trials, steps, estimates = [], [], []
    for path in dirs:
        sweep = path.resolve().name
        trials.append(_scan(path / "trials.parquet", TRIALS_SCHEMA, sweep))
        has_steps = (path / "steps.parquet").is_file()
        steps.append(_scan(path / "steps.parquet", STEPS_SCHEMA, sweep) if has_steps
                     else pl.LazyFrame(schema=dict(STEPS_SCHEMA)))
        if (path / "evals.parquet").is_file():
            estimates.append(_scan(path / "evals.parquet", ESTIMATE_COLUMNS, sweep))
    all_trials = pl.concat(trials, how="vertical")
    extra = pl.concat(estimates, how="vertical") if estimates else None
    return Results(all_trials, pl.concat(steps, how="vertical"), _evals(all_trials, extra))
