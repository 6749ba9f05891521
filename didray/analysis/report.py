"""Printed summaries and the markdown "DID entropy vs capability" report.

The paper's headline comparison (arXiv:2505.23761): high-entropy DID helps open-ended
instruction following, low-entropy DID helps knowledge-intensive QA. Here that reads as the
sign of the rank correlation between a trained policy's DID entropy and each score, across the
finished trials of a sweep within each training beta (pooled over regimes and seeds), with its
interval from a bootstrap over datasets, the independent units (docs/design.md §3.6).
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import polars as pl

from didray.analysis.load import Results, load
from didray.analysis.plots import write_plots
from didray.analysis.tables import (
    COUNTS,
    ESTIMATOR,
    compare,
    correlations,
    entropy_vs_scores,
    optimum,
    regimes,
    weight_correlations,
)
from didray.display import print_frame, readable_numbers

PRECISION = 3
# A verdict needs this many independent units (datasets) in all, and in every beta stratum.
# The bootstrap interval covers 0.9-0.95 at 6 units but under 0.9 at 3 (bench/intervals.py,
# docs/design.md §3.6), and at 3 units per stratum a perfect rank order still happens by
# chance one time in six per stratum.
MIN_UNITS = 6
# The DID entropies the claims are read against: learned, and encoded by the data.
ENTROPIES = ("did_entropy", "data_did_entropy")
MIN_STRATUM_UNITS = 3
# (score, the sign of its correlation with DID entropy that the paper's claim predicts).
# instruction_winrate is no row: it is derived from the judge scores instruction_score is
# made of (toy: exactly 1/2 + (judge - pi_ref's judge) / 2), not a second measurement
# (docs/design.md §3.6, §6.1).
CLAIMS = (("instruction_score", 1, "high-entropy DID helps instruction following"),
          ("qa_accuracy", -1, "low-entropy DID helps knowledge QA"),
          ("qa_expected", -1, "low-entropy DID helps knowledge QA"))
SIGNS = {score: sign for score, sign, _ in CLAIMS}


def _title(text: str, fmt: str) -> str:
    wrapped = textwrap.fill(text, shutil.get_terminal_size().columns)  # as tables: display.py
    return {"md": f"### {text}", "csv": f"# {text}"}.get(fmt, wrapped)


def readable(frame: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """For reading on a terminal or in markdown, drop columns that say nothing: all-null ones
    (CIs with one seed), and the sweep name and DID-entropy estimator when the table has one
    of each (several estimators stay visible). CSV keeps every column."""
    if fmt == "csv":
        return frame
    empty = [c for c in frame.columns if frame[c].null_count() == frame.height]
    single = [c for c in ("sweep", ESTIMATOR) if c in frame.columns and c not in empty
              and frame[c].n_unique() == 1]
    return frame.drop(empty + single)


def print_tables(results: Results, fmt: str = "table") -> pl.DataFrame:
    """Print the entropy-vs-scores table, the regimes, the correlations and the verdicts;
    return the first (its status counts decide `didray run`'s exit code)."""
    table, corr = entropy_vs_scores(results), both_correlations(results)
    weights = judge_weights(results)
    titled = (
        ("DID entropy vs downstream scores (per regime x beta; finished trials; 95% t interval "
         "over seeds, null with one seed)", table),
        ("What each regime's data encode (data DID entropy, label strength, resampling ESS) "
         "and the mean learned DID entropy", regimes(results)),
        ("The known answer of each tilted cell: its population DPO optimum's DID entropy next "
         "to the learned one, and the final TV / KL to it (docs/design.md §1.11)",
         optimum(results)),
        ("Correlation of DID entropy with each score across finished trials, within training "
         "beta (95% intervals from a bootstrap over independent units: datasets); entropy: "
         "did_entropy, what the policy learned, and data_did_entropy, what the data encode "
         "(the manipulated variable)", corr),
        ("The paper's claims against those correlations (supported / contradicted: the "
         "Spearman interval excludes 0 on the predicted / opposite side, with at least "
         f"{MIN_UNITS} independent units (datasets), {MIN_STRATUM_UNITS} per beta); "
         "instruction_score at the sweep's pre-registered judge weight (judge_weight), "
         "verdict_by_weight: the verdict at every weight", verdicts(corr, weights)),
        (WEIGHTS_TITLE, weights),
    )
    # A sweep without a known optimum (hf, offpolicy) or judge parts (hf) has no rows there.
    titled = tuple((title, frame) for title, frame in titled if frame.height)
    for i, (title, frame) in enumerate(titled):
        print(("\n" if i else "") + _title(title, fmt))
        print_frame(readable(frame, fmt), fmt, PRECISION)
    return table


def print_summary(sweep_dir: Path, fmt: str = "table") -> pl.DataFrame:
    """What `didray run` prints at the end of a sweep: `print_tables` of its directory."""
    return print_tables(load(sweep_dir), fmt)


def markdown(frame: pl.DataFrame) -> str:
    """A frame as a GitHub markdown table, every row and column shown."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=1000, tbl_width_chars=65_000,
                   tbl_formatting="MARKDOWN", tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        return str(readable_numbers(frame, PRECISION))


def both_correlations(results: Results) -> pl.DataFrame:
    """`correlations` of the learned DID entropy, then of the one the data encode where the
    trials carry it (docs/design.md §3.7): a verdict row for each."""
    names = results.trials.collect_schema().names()
    return pl.concat([correlations(results, entropy=x) for x in ENTROPIES if x in names])


def _verdict() -> pl.Expr:
    """supported / contradicted when the Spearman interval excludes 0 on the side of
    `predicted_sign` / the other side and there are enough independent units (MIN_UNITS,
    MIN_STRATUM_UNITS), inconclusive otherwise (including when there is no interval)."""
    signed = pl.col("predicted_sign")
    low, high = pl.col("spearman_ci_low") * signed, pl.col("spearman_ci_high") * signed
    enough = (pl.col("units") >= MIN_UNITS) & (pl.col("stratum_units") >= MIN_STRATUM_UNITS)
    return (pl.when(~enough.fill_null(False)).then(pl.lit("inconclusive"))
            .when(pl.min_horizontal(low, high) > 0).then(pl.lit("supported"))
            .when(pl.max_horizontal(low, high) < 0).then(pl.lit("contradicted"))
            .otherwise(pl.lit("inconclusive")).alias("verdict"))


def verdicts(table: pl.DataFrame, weights: pl.DataFrame | None = None) -> pl.DataFrame:
    """Each claim of the paper against the Spearman correlations of `correlations()`, by
    `_verdict`; the units are shown beside the verdict. With the `judge_weights` table, the
    instruction row also names the weight its score was read at (the sweep's pre-registered
    one; null where the sweep's trials used several) and the verdict at every weight, since
    that weight alone can decide it (docs/design.md §3.6)."""
    claims = pl.DataFrame(CLAIMS, schema=["score", "predicted_sign", "claim"], orient="row")
    table = (claims.join(table, on="score", how="left", maintain_order="left")
             .with_columns(_verdict())
             .select("sweep", ESTIMATOR, "claim", "score", "entropy", "n", "units",
                     "stratum_units", "spearman", "spearman_ci_low", "spearman_ci_high",
                     "verdict"))
    if weights is None:
        return table
    return table.join(_by_weight(weights), on=["sweep", ESTIMATOR, "score", "entropy"],
                      how="left", maintain_order="left")


def verdict_table(results: Results) -> pl.DataFrame:
    """The verdicts `didray analyze` prints, as one table (`--table verdicts`, `--out`)."""
    return verdicts(both_correlations(results), judge_weights(results))


WEIGHTS_TITLE = ("The instruction claim at every judge weight w (instruction_score = (1 - w) "
                 "judge + w coverage, recomputed from the two parts each trial stores; "
                 "preregistered: the sweep's eval.judge.diversity_weight)")


def judge_weights(results: Results) -> pl.DataFrame:
    """The instruction claim's verdict at every judge weight: `weight_correlations` with the
    verdict `verdicts` would give each row (docs/design.md §3.6)."""
    return (weight_correlations(results)
            .with_columns(predicted_sign=pl.lit(SIGNS["instruction_score"]))
            .with_columns(_verdict()).drop("predicted_sign"))


def _by_weight(weights: pl.DataFrame) -> pl.DataFrame:
    """Per (sweep, estimator): the pre-registered weight (null unless the trials share one)
    and the verdicts along the weights, e.g. "contradicted at w 0 to 0.7; supported at w 0.8
    to 1"."""
    rows = []
    for (sweep, estimator), group in weights.group_by("sweep", ESTIMATOR, maintain_order=True):
        own = group.filter("preregistered")["judge_weight"]
        runs: list[list] = []  # [verdict, first w, last w]
        for w, verdict in group.sort("judge_weight").select("judge_weight", "verdict").rows():
            if runs and runs[-1][0] == verdict:
                runs[-1][2] = w
            else:
                runs.append([verdict, w, w])
        rows.append({"sweep": sweep, ESTIMATOR: estimator, "score": "instruction_score",
                     "entropy": "did_entropy",
                     "judge_weight": own.item() if own.len() == 1 else None,
                     "verdict_by_weight": "; ".join(
                         f"{v} at w {a:g}" + (f" to {b:g}" if b != a else "")
                         for v, a, b in runs)})
    return pl.DataFrame(rows, schema={"sweep": pl.String, ESTIMATOR: pl.String,
                                      "score": pl.String, "entropy": pl.String,
                                      "judge_weight": pl.Float64,
                                      "verdict_by_weight": pl.String})


def capability_report(results: Results, out: Path, title: str) -> Path:
    """Write `out/report.md` (tables, verdicts, the figures as PNG) and the figures (PNG and
    PDF); return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    figures = write_plots(results, out)
    table, weights = entropy_vs_scores(results), judge_weights(results)
    counts = table.select(*COUNTS).sum().row(0, named=True)
    by_weight = [] if weights.is_empty() else [  # hf trials have no judge parts
        "## The instruction claim at every judge weight",
        "The instruction verdict above is read at the sweep's pre-registered judge weight "
        "(`judge_weight`: eval.judge.diversity_weight, chosen before the run). The same "
        "trials, their instruction score recomputed at every weight from its two parts:",
        markdown(weights)]
    sections = [
        f"# DID entropy vs capability: {title}",
        "Claim under test (arXiv:2505.23761): high-entropy DID helps open-ended instruction "
        "following, low-entropy DID helps knowledge-intensive QA. Each finished trial is one "
        "point (DID entropy of the trained policy, score); the verdict reads the 95% interval "
        "of the Spearman correlation within training beta (ranks centred per beta, since beta "
        "alone moves both the entropy and the scores) from a bootstrap over datasets, the "
        "independent units: a regime's seeds share its data. With fewer than "
        f"{MIN_UNITS} units, or {MIN_STRATUM_UNITS} in a beta, it is inconclusive.",
        f"Trials: {counts['trials']} ({counts['finished']} finished, {counts['failed']} failed, "
        f"{counts['stopped']} stopped early, {counts['running']} running); only finished "
        "trials are evaluated.",
        "## Verdicts", markdown(verdicts(both_correlations(results), weights)), *by_weight,
        "## What each regime's data encode", markdown(regimes(results)),
        *(["## Each cell's known optimum against the learned policy", markdown(known)]
          if (known := optimum(results)).height else []),
        "## DID entropy by regime and beta", markdown(compare(results, "did_entropy")),
        "## Instruction score by regime and beta",
        markdown(compare(results, "instruction_score")),
        "## QA accuracy by regime and beta", markdown(compare(results, "qa_accuracy")),
        "## Per regime x beta (means over finished seeds)", markdown(table),
        "## Figures", *[f"![{path.stem}]({path.name})" for path in figures
                        if path.suffix == ".png"],
    ]
    report = out / "report.md"
    report.write_text("\n\n".join(sections) + "\n")
    return report
