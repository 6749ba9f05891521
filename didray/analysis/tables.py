"""Tables of DID entropy against downstream scores: lazy Polars, one `collect()` per table.

Every table counts trials by status (finished = TERMINATED, failed = ERROR, stopped = STOPPED:
cut early by the search.scheduler, running = anything else) so a partial or broken sweep shows
what is missing instead of silently averaging fewer seeds; scores are averaged over finished
trials only (the others have no evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from didray.analysis.load import Results
from didray.analysis.stats import t_critical, unit_bootstrap
from didray.errors import BadInput
from didray.metrics import SETTING, lookup

KEYS = ("sweep", "regime", "beta")
DESCRIPTORS = ("regime_kind", "tau", "beta_data")
SCORES = ("instruction_score", "instruction_winrate", "qa_accuracy", "chosen_displacement",
          "rejected_displacement", "reward_accuracy")
# QA split by what the data can teach (toy, docs/design.md §2.2): correlated, not a verdict
# row of its own; the claim stays on qa_accuracy as a benchmark would score it.
CORRELATED = ("instruction_score", "instruction_winrate", "qa_accuracy", "qa_accuracy_teachable",
              "qa_accuracy_unteachable", "qa_expected", "chosen_displacement",
              "rejected_displacement", "reward_accuracy")
CURVES = ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected",
          "did/entropy", "eval/instruction_score", "eval/qa_accuracy")
# What `did_entropy` holds (exact, or e.g. plugin_k32): values of different estimators are
# never pooled or correlated together (docs/design.md §6.3).
ESTIMATOR = "did_entropy_estimator"
FINISHED = pl.col("status") == "TERMINATED"
FAILED = pl.col("status") == "ERROR"
STOPPED = pl.col("status") == "STOPPED"
COUNTS = ("trials", "finished", "failed", "stopped", "running")


def keys(frame: pl.LazyFrame) -> list[str]:
    """KEYS and the swept train.* / eval.* settings the frame has (`search: {train.lr: ...}`):
    trials that differ in a swept setting are never averaged together."""
    settings = [c for c in frame.collect_schema().names()
                if (m := lookup(c)) is not None and SETTING in m.name]
    return [*KEYS, *settings]


def flag_status(frame: pl.LazyFrame) -> pl.LazyFrame:
    """`frame` with boolean `_finished`/`_failed`/`_stopped` columns, computed once, so that
    aggregations downstream are plain sums and means (Polars' fast group-by path)."""
    return frame.with_columns(_finished=FINISHED.fill_null(False),
                              _failed=FAILED.fill_null(False), _stopped=STOPPED.fill_null(False))


def status_counts() -> list[pl.Expr]:
    """trials/finished/failed/stopped counts of a group of `flag_status` rows (`add_running`
    adds the rest, so the counts always add up)."""
    return [pl.len().alias("trials"), pl.col("_finished").sum().alias("finished"),
            pl.col("_failed").sum().alias("failed"), pl.col("_stopped").sum().alias("stopped")]


def add_running() -> pl.Expr:
    return (pl.col("trials") - pl.col("finished") - pl.col("failed")
            - pl.col("stopped")).alias("running")


def t_interval(column: str, n: str, sd: str, level: float = 0.95) -> list[pl.Expr]:
    """`column`_ci_low/high: mean +- t_{n-1} sd / sqrt(n); null below 2 values (sd is null)."""
    critical = pl.col(n).clip(lower_bound=2).map_elements(
        lambda count: t_critical(count - 1, level), return_dtype=pl.Float64)
    half = critical * pl.col(sd) / pl.col(n).cast(pl.Float64).sqrt()
    return [(pl.col(column) - half).alias(f"{column}_ci_low"),
            (pl.col(column) + half).alias(f"{column}_ci_high")]


def entropy_vs_scores(results: Results, level: float = 0.95) -> pl.DataFrame:
    """One row per (sweep, regime, beta, swept settings): status counts, DID entropy mean
    and t interval over finished seeds (null with fewer than two) with the estimator(s)
    behind it, and mean downstream scores of finished trials."""
    evaluated = ("did_entropy", *SCORES)
    by = keys(results.trials)
    table = (flag_status(results.trials)
             .with_columns(pl.when("_finished").then(pl.col(c)).alias(c) for c in evaluated)
             .group_by(by)
             .agg(*[pl.col(c).first() for c in DESCRIPTORS], *status_counts(),
                  pl.col(ESTIMATOR).filter(pl.col("_finished")).drop_nulls().unique().sort()
                  .str.join(", "),
                  pl.col("did_entropy").mean(), pl.col("did_entropy").std().alias("_sd"),
                  pl.col("did_entropy").count().alias("_n"), *[pl.col(s).mean() for s in SCORES])
             .with_columns(add_running(), *t_interval("did_entropy", "_n", "_sd", level))
             .select(*by[:2], *DESCRIPTORS, *by[2:], *COUNTS,
                     ESTIMATOR, "did_entropy", "did_entropy_ci_low", "did_entropy_ci_high",
                     *SCORES)
             .sort(by, nulls_last=True))
    return table.collect()


DATA_COLUMNS = ("regime_kind", "tau", "beta_data", "data_did_entropy", "data_did_entropy_method",
                "data_pairs", "data_chosen_higher", "data_margin_abs", "data_ess")


def regimes(results: Results) -> pl.DataFrame:
    """One row per dataset (sweep, regime, and data.seed where it is an axis): what its data
    encode (docs/design.md §5.4: the DID entropy of the data and how it was computed, label
    strength, resampling ESS) next to the mean learned DID entropy of its finished trials, so
    regimes compared in a sweep can be checked for comparable label information, and the
    replicate datasets of a regime for how much they differ."""
    unit = default_unit(results.trials.collect_schema().names())
    table = (flag_status(results.trials)
             .group_by(unit)
             .agg(*[pl.col(c).first() for c in DATA_COLUMNS], *status_counts(),
                  pl.col("did_entropy").filter("_finished").mean().alias("learned_did_entropy"))
             .sort("sweep", "data_did_entropy", *unit[1:], nulls_last=True)
             .select(*unit, *DATA_COLUMNS, "finished", "learned_did_entropy"))
    return table.collect()


def optimum(results: Results) -> pl.DataFrame:
    """One row per (sweep, regime, beta, swept settings) of the tilted regimes' toy trials:
    the level the data encode, the DID entropy of the cell's population DPO optimum (the
    closed form, docs/design.md §1.11), the mean learned one over finished trials, their gap,
    and the policies' final TV and KL to the optimum. Where the gap is large, finite data and
    steps (or a bug) moved the policy off the answer the data define (§7.7). Empty for a sweep
    with no optimum (hf, offpolicy, pg with given chosen responses)."""
    by = keys(results.trials)
    names = results.trials.collect_schema().names()
    if "optimum_did_entropy" not in names:
        return pl.DataFrame(schema={c: pl.String for c in by})
    finished = pl.col("_finished")
    table = (flag_status(results.trials).filter(pl.col("optimum_did_entropy").is_not_null())
             .group_by(by)
             .agg(pl.col("data_did_entropy").first(), pl.col("optimum_did_entropy").first(),
                  finished.sum().alias("finished"),
                  *[pl.col(c).filter(finished).mean().alias(alias) for c, alias in (
                      ("did_entropy", "learned_did_entropy"), ("final/optimum_tv", "optimum_tv"),
                      ("final/optimum_kl", "optimum_kl"))])
             .with_columns(gap=pl.col("learned_did_entropy") - pl.col("optimum_did_entropy"))
             .select(*by, "data_did_entropy", "finished", "optimum_did_entropy",
                     "learned_did_entropy", "gap", "optimum_tv", "optimum_kl")
             .sort(by, nulls_last=True))
    return table.collect()


def correlations(results: Results, by: Sequence[str] = ("sweep",),
                 within: Sequence[str] = ("beta",), unit: Sequence[str] | None = None,
                 resamples: int = 1000, level: float = 0.95, seed: int = 0,
                 scores: Sequence[str] = CORRELATED,
                 entropy: str = "did_entropy") -> pl.DataFrame:
    """Pearson and Spearman of DID entropy against each of `scores` over finished trials, per
    `by` group and DID-entropy estimator (an exact toy value and an hf estimate are not one
    variable), with bootstrap intervals over independent units (`stats.unit_bootstrap`).

    `entropy` names which DID entropy (the `entropy` column says): the learned one
    (`did_entropy`, the default), or the one the data encode (`data_did_entropy`), the
    variable the sweep manipulates: within a beta its ranks are those of the cell's optimum
    (§1.9), so the two tables separate "the data's level moves the scores" from "what the
    policy learned moves them" (docs/design.md §3.7).

    The correlations are taken *within* strata of `within` (default: the training beta): both
    variables (for Spearman, their ranks in the stratum) are centred on their stratum's mean
    before pooling. The training beta sets how far a policy moves from pi_ref, and so both its
    DID entropy and its scores; pooled across betas, a correlation can be the beta axis alone,
    even with the opposite sign to every within-beta one (docs/design.md §7.2). With one
    stratum these are the ordinary Pearson and Spearman coefficients.

    Every trial of a regime trains on one dataset, so its seeds replicate training noise, not
    data: the bootstrap resamples `unit`s (default `default_unit`), a drawn unit bringing all
    its trials, and re-ranks and re-centres every resample. n counts the trials with both
    values, `units` the distinct units, `stratum_units` the fewest units in any stratum.
    Correlations are null where a score is constant (undefined), intervals null below
    `stats.MIN_INTERVAL_UNITS` units. Draws are seeded and units taken in sorted order, so a
    table is reproducible and independent of trials.parquet's row order.
    """
    names = results.trials.collect_schema().names()
    unit = default_unit(names) if unit is None else list(unit)
    for axis in (*by, *within, *unit, entropy):
        _require(axis, names, "correlations")
    group = [*by, ESTIMATOR, "score"]
    pairs = (results.trials.filter(FINISHED).with_columns(pl.col(entropy).alias("_x"))
             .unpivot(on=list(scores),
                      index=list(dict.fromkeys([*by, *within, *unit, ESTIMATOR, "_x"])),
                      variable_name="score", value_name="value")
             .drop_nulls(["_x", "value"])
             .with_columns(_codes(within, group).alias("_stratum"),
                           _codes(unit, group).alias("_unit"))
             .sort([*group, "_stratum", "_unit", "_x", "value"], nulls_last=True)
             .collect())
    rows = [{**dict(zip(group, key, strict=True)), "entropy": entropy, **_effective_n(frame),
             **unit_bootstrap(*_arrays(frame), resamples, level, seed)}
            for key, frame in pairs.partition_by(group, as_dict=True,
                                                 maintain_order=True).items()]
    schema = {**pairs.select(group).schema, "entropy": pl.String, "n": pl.UInt32,
              "units": pl.UInt32,
              "stratum_units": pl.UInt32,
              **{f"{m}{end}": pl.Float64 for m in ("pearson", "spearman")
                 for end in ("", "_ci_low", "_ci_high")}}
    return pl.DataFrame(rows, schema=schema)


# The judge weights the instruction verdict is shown at (docs/design.md §3.6); a sweep's own,
# pre-registered weight is added where it is not among them.
JUDGE_WEIGHTS = tuple(i / 10 for i in range(11))


def instruction_at(w: float) -> pl.Expr:
    """instruction_score at judge weight `w`, from the two parts every toy trial stores:
    (1 - w) instruction_judge + w instruction_coverage (docs/design.md §6.1)."""
    return (1 - w) * pl.col("instruction_judge") + w * pl.col("instruction_coverage")


def weight_correlations(results: Results,
                        weights: Sequence[float] = JUDGE_WEIGHTS) -> pl.DataFrame:
    """The instruction claim's correlation at every judge weight: one row per (sweep,
    estimator, w) with the Spearman of DID entropy and `instruction_at(w)` within beta, its
    interval over independent units, n and units, exactly as `correlations` computes them for
    instruction_score. `preregistered` marks the sweep's own weight, its
    trials' `judge_weight` (eval.judge.diversity_weight), which the headline verdict is read
    at. No rows for trials without the two parts (the hf world)."""
    own = (results.trials.filter(FINISHED).select("sweep", "judge_weight").drop_nulls().unique()
           .collect())
    grid = sorted({*weights, *own["judge_weight"]})
    names = {f"_w{i}": w for i, w in enumerate(grid)}
    trials = results.trials.with_columns(instruction_at(w).alias(n) for n, w in names.items())
    table = correlations(Results(trials, results.steps, results.evals), scores=list(names))
    return (table.with_columns(pl.col("score").replace_strict(names, return_dtype=pl.Float64)
                               .alias("judge_weight"), score=pl.lit("instruction_score"))
            .join(own.with_columns(preregistered=pl.lit(True)), on=["sweep", "judge_weight"],
                  how="left", maintain_order="left")
            .select("sweep", ESTIMATOR, "score", "judge_weight",
                    pl.col("preregistered").fill_null(False), "n", "units", "stratum_units",
                    "spearman", "spearman_ci_low", "spearman_ci_high")
            .sort("sweep", ESTIMATOR, "judge_weight"))


def default_unit(columns: Sequence[str]) -> list[str]:
    """The independent unit of a sweep: its dataset, i.e. the (sweep, regime) and the data
    seed where trials carry one (`data.seed` swept across sweeps pooled together)."""
    return ["sweep", "regime", *(["data.seed"] if "data.seed" in columns else [])]


def _codes(columns: Sequence[str], group: Sequence[str]) -> pl.Expr:
    """0, 1, ... for the distinct values of `columns` within each `group`, in sorted order."""
    if not columns:
        return pl.lit(0, pl.Int64)
    return (pl.struct(columns).rank("dense").over(group) - 1).cast(pl.Int64)


def _arrays(frame: pl.DataFrame) -> list:
    """DID entropy, score, stratum and unit codes of one group's trials, as unit_bootstrap
    takes them."""
    return [frame[c].to_numpy() for c in ("_x", "value", "_stratum", "_unit")]


def _effective_n(frame: pl.DataFrame) -> dict[str, int]:
    """Trials, independent units, and the fewest units in any stratum of one group."""
    per_stratum = frame.group_by("_stratum").agg(pl.col("_unit").n_unique())["_unit"]
    return {"n": frame.height, "units": frame["_unit"].n_unique(),
            "stratum_units": per_stratum.min()}


def dynamics(results: Results) -> pl.DataFrame:
    """Training curves averaged over seeds: one row per (sweep, regime, beta, swept settings,
    step) with the
    mean and standard deviation (null for one seed) of each reported metric, and the status
    counts of the trials that reported the step (running, failed and stopped trials' steps are
    kept)."""
    status = flag_status(results.trials).select("sweep", "trial_id", "_finished", "_failed",
                                                "_stopped")
    aggs = [expr for m in CURVES
            for expr in (pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_std"))]
    by = keys(results.steps)
    table = (results.steps.join(status, on=["sweep", "trial_id"], how="left")
             .group_by(*by, "step")
             .agg(*status_counts(), *aggs)
             .with_columns(add_running())
             .select(*by, "step", *COUNTS,
                     *[f"{m}_{stat}" for m in CURVES for stat in ("mean", "std")])
             .sort(*by, "step", nulls_last=True))
    return table.collect()


def compare(results: Results, metric: str, rows: str | Sequence[str] = "regime",
            columns: str = "beta") -> pl.DataFrame:
    """`metric` (a trials.parquet column) averaged over the trials that have it, pivoted:
    one row per `rows` value, one column per `columns` value (named `<columns>=<value>`).

    A cell whose trials all lack the metric (failed, still running) is null, not absent.
    `did_entropy` from more than one estimator gets the estimator as the first row key, so an
    exact value and an estimate are never averaged together.
    """
    rows = [rows] if isinstance(rows, str) else list(rows)
    if metric == "did_entropy" and ESTIMATOR not in rows and _estimators(results) > 1:
        rows = [ESTIMATOR, *rows]
    # The loaded columns, a sweep's swept settings (train.lr) included.
    schema = results.trials.collect_schema()
    _require(metric, [c for c, dtype in schema.items() if dtype.is_numeric()], "compare")
    for axis in (*rows, columns):
        _require(axis, schema.names(), "compare")
    means = (results.trials.group_by(*rows, columns).agg(pl.col(metric).mean())
             .sort(*rows, columns).collect())
    wide = means.pivot(on=columns, index=rows, values=metric, sort_columns=True)
    return wide.rename({c: f"{columns}={c}" for c in wide.columns if c not in rows})


def _estimators(results: Results) -> int:
    return results.trials.select(pl.col(ESTIMATOR).drop_nulls().n_unique()).collect().item()


def _require(name: str, allowed: list[str], caller: str) -> None:
    if name not in allowed:
        raise BadInput(f"{caller}: unknown column {name!r}; choose from {', '.join(allowed)}")
