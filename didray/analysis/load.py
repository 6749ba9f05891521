"""Scan one or more results directories into lazy frames with declared schemas.

A results directory grows while its sweep runs (a trial that failed has an `error` column and no
evaluation, a running one has no evaluation yet, no trial may have reported a step), so every
frame is cast to a declared schema: absent optional columns become typed nulls and every
transform downstream can name them unconditionally. Several sweeps load together, told apart
by a `sweep` column holding the directory name.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from didray import metrics
from didray.errors import BadInput
from didray.files import TABLES, has_seals, manifest_json, read_sealed, seal_path
from didray.storage import Storage, is_uri

DTYPES = {"float": pl.Float64(), "int": pl.Int64(), "str": pl.String()}


def _schema(names: Iterable[str]) -> pl.Schema:
    return pl.Schema({n: DTYPES[metrics.lookup(n).dtype] for n in names})


AXES = _schema(m.name for m in metrics.AXES if not m.patterned)  # settings: as swept
# Only exact values unpivot into the long-form evals: the estimate means (patterned names) stay
# wide, `did_entropy` repeats either the exact value or an estimate, and `judge_weight` is a
# setting of the evaluation, not a value of it. The exact DID entropy becomes metric
# "did_entropy", the quantity evals.parquet's estimates estimate.
EVAL_METRICS = tuple(m.name for m in metrics.TRIAL if m.dtype == "float"
                     and not m.patterned and m.name not in ("did_entropy", "judge_weight"))
EXACT_METRIC = {"did_entropy_exact": "did_entropy"}
# A patterned name is one column per K: the ones a sweep wrote load as its extra columns.
TRIALS_SCHEMA = _schema([m.name for m in metrics.columns("trials") if not m.patterned]
                        + [metrics.FINAL + n for n in metrics.step_values()])
STEPS_SCHEMA = _schema(m.name for m in metrics.columns("steps") if not m.patterned)
ESTIMATE_COLUMNS = _schema(["sweep", "trial_id", "step", *(m.name for m in metrics.ESTIMATE)])
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
    locations: each loaded sweep's directory or URI, by its `sweep` name (where its
    checkpoints are: `didray.analysis.policy`).
    """

    trials: pl.LazyFrame
    steps: pl.LazyFrame
    evals: pl.LazyFrame
    locations: Mapping[str, str] = field(default_factory=dict)

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
    """`frame` with `schema`'s columns first, in order (cast, or typed nulls where absent),
    then every other column it has, unchanged: nothing a sweep wrote is dropped.

    A frame that has none of the columns (a Parquet file written before any row existed)
    becomes an empty frame, not one row of nulls.
    """
    names = frame.collect_schema().names()
    if not set(names) & set(schema):
        return pl.LazyFrame(schema=dict(schema))
    return frame.select([pl.col(name).cast(dtype) if name in names
                         else pl.lit(None, dtype).alias(name)
                         for name, dtype in schema.items()]
                        + [name for name in names if name not in schema])


def _evals(trials: pl.LazyFrame, estimates: pl.LazyFrame | None) -> pl.LazyFrame:
    """Long-form evaluations: the exact values of trials.parquet plus any estimate rows."""
    exact = (trials.unpivot(on=list(EVAL_METRICS), index=[*AXES, "step"], variable_name="metric",
                            value_name="estimate")
             .drop_nulls("estimate")
             .with_columns(pl.col("metric").replace(EXACT_METRIC), estimator=pl.lit("exact"),
                           exact=pl.col("estimate")))
    frames = [conform(exact, EVALS_SCHEMA)]
    if estimates is not None:
        # The trial's axes come from trials.parquet, the one place they are kept.
        own_axes = [a for a in AXES if a not in ("sweep", "trial_id")]
        joined = (estimates.drop(own_axes, strict=False)
                  .with_columns(pl.col("metric").fill_null("did_entropy"))
                  .join(trials.select(*AXES), on=["sweep", "trial_id"], how="left",
                        maintain_order="left"))
        frames.append(conform(joined, EVALS_SCHEMA))
    return pl.concat(frames, how="diagonal_relaxed")


def _read_parquet(path: Path, sealed: bool) -> pl.DataFrame:
    """The table, its bytes read once and checked against its seal (a flipped byte can read
    as a plausible wrong value; in a `sealed` sweep a missing seal is damage, §3.3), then
    decoded from those same bytes: a sweep rewriting the file meanwhile cannot mix two
    versions, and a truncated or foreign file fails here, named, not mid-query."""
    data = read_sealed(path, sealed)
    try:
        return pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BadInput(f"{path}: not a readable Parquet file ({reason})") from None


def _scan(path: Path, schema: Mapping[str, pl.DataType], sweep: str, sealed: bool
          ) -> pl.LazyFrame:
    frame = _read_parquet(path, sealed).lazy()
    return conform(frame.with_columns(sweep=pl.lit(sweep)), schema)


def mirrored(uri: str) -> Path:
    """A sweep directory on a remote storage, its tables and manifest pulled into this
    machine's mirror (afresh: a sweep still running there has changed them)."""
    storage = Storage.of(uri)
    storage.check()
    shutil.rmtree(storage.local, ignore_errors=True)
    tables = [storage.local / name for name in TABLES]
    if not storage.pull(*tables, *map(seal_path, tables), storage.local / "manifest.json"):
        raise BadInput(f"{uri}: no results there (is it a sweep's <storage>/<name>/ URI?)")
    return storage.local


def _sweep_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """The results directories, each checked to hold a trials.parquet, names distinct."""
    dirs = [mirrored(p) if is_uri(p) else Path(p) for p in paths]
    if not dirs:
        raise BadInput("no results directory given")
    for path in dirs:
        if not path.is_dir():
            raise BadInput(f"{path}: no such results directory")
        manifest_json(path / "manifest.json")  # a corrupt one is named, not ignored
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
    given = [paths] if isinstance(paths, str | Path) else list(paths)
    dirs = _sweep_dirs(given)
    trials, steps, estimates = [], [], []
    for path in dirs:
        sweep, sealed = path.resolve().name, has_seals(path)
        trials.append(_scan(path / "trials.parquet", TRIALS_SCHEMA, sweep, sealed))
        has_steps = (path / "steps.parquet").is_file()
        steps.append(_scan(path / "steps.parquet", STEPS_SCHEMA, sweep, sealed) if has_steps
                     else pl.LazyFrame(schema=dict(STEPS_SCHEMA)))
        if (path / "evals.parquet").is_file():
            estimates.append(_scan(path / "evals.parquet", ESTIMATE_COLUMNS, sweep, sealed))
    # Sweeps may carry different extra columns: each frame's own ones are kept, null elsewhere.
    all_trials = pl.concat(trials, how="diagonal_relaxed")
    extra = pl.concat(estimates, how="diagonal_relaxed") if estimates else None
    locations = {d.resolve().name: str(p) if is_uri(p) else str(d.resolve())
                 for p, d in zip(given, dirs, strict=True)}
    return Results(all_trials, pl.concat(steps, how="diagonal_relaxed"),
                   _evals(all_trials, extra), locations)
