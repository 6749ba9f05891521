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
    regimes,
)
from didray.display import print_frame

PRECISION = 3
# A verdict needs this many independent units (datasets) in all, and in every beta stratum.
# The bootstrap interval covers 0.9-0.95 at 6 units but under 0.9 at 3 (bench/intervals.py,
# docs/design.md §3.6), and at 3 units per stratum a perfect rank order still happens by
# chance one time in six per stratum.
MIN_UNITS = 6
MIN_STRATUM_UNITS = 3
# (score, the sign of its correlation with DID entropy that the paper's claim predicts).
# instruction_winrate is no row: it is derived from the judge scores instruction_score is
# made of (toy: exactly 1/2 + (judge - pi_ref's judge) / 2), not a second measurement
# (docs/design.md §3.6, §6.1).
CLAIMS = (("instruction_score", 1, "high-entropy DID helps instruction following"),
          ("qa_accuracy", -1, "low-entropy DID helps knowledge QA"),
          ("qa_expected", -1, "low-entropy DID helps knowledge QA"))


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
    table, corr = entropy_vs_scores(results), correlations(results)
    titled = (
        ("DID entropy vs downstream scores (per regime x beta; finished trials; 95% t interval "
         "over seeds, null with one seed)", table),
        ("What each regime's data encode (data DID entropy, label strength, resampling ESS) "
         "and the mean learned DID entropy", regimes(results)),
        ("Correlation of DID entropy with each score across finished trials, within training "
         "beta (95% intervals from a bootstrap over independent units: datasets)", corr),
        ("The paper's claims against those correlations (supported / contradicted: the "
         "Spearman interval excludes 0 on the predicted / opposite side, with at least "
         f"{MIN_UNITS} independent units (datasets), {MIN_STRATUM_UNITS} per beta)",
         verdicts(corr)),
    )
    for i, (title, frame) in enumerate(titled):
        print(("\n" if i else "") + _title(title, fmt))
        print_frame(readable(frame, fmt), fmt, PRECISION)
    return table


def print_summary(sweep_dir: Path, fmt: str = "table") -> pl.DataFrame:
    """What `didray run` prints at the end of a sweep: `print_tables` of its directory."""
    return print_tables(load(sweep_dir), fmt)


def markdown(frame: pl.DataFrame) -> str:
    """A frame as a GitHub markdown table, every row and column shown."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=10_000,
                   float_precision=PRECISION, tbl_formatting="MARKDOWN",
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        return str(frame)


def verdicts(table: pl.DataFrame) -> pl.DataFrame:
    """Each claim of the paper against the Spearman correlations of `correlations()`:
    supported / contradicted when the interval excludes 0 on the predicted / opposite side and
    the sweep has enough independent units (MIN_UNITS, MIN_STRATUM_UNITS), inconclusive
    otherwise (including when there is no interval). The units are shown beside the verdict."""
    claims = pl.DataFrame(CLAIMS, schema=["score", "predicted_sign", "claim"], orient="row")
    signed = pl.col("predicted_sign")
    low, high = pl.col("spearman_ci_low") * signed, pl.col("spearman_ci_high") * signed
    enough = (pl.col("units") >= MIN_UNITS) & (pl.col("stratum_units") >= MIN_STRATUM_UNITS)
    verdict = (pl.when(~enough.fill_null(False)).then(pl.lit("inconclusive"))
               .when(pl.min_horizontal(low, high) > 0).then(pl.lit("supported"))
               .when(pl.max_horizontal(low, high) < 0).then(pl.lit("contradicted"))
               .otherwise(pl.lit("inconclusive")))
    return (claims.join(table, on="score", how="left", maintain_order="left")
            .with_columns(verdict.alias("verdict"))
            .select("sweep", ESTIMATOR, "claim", "score", "n", "units", "stratum_units",
                    "spearman", "spearman_ci_low", "spearman_ci_high", "verdict"))


def capability_report(results: Results, out: Path, title: str) -> Path:
    """Write `out/report.md` (tables, verdicts, the figures as PNG) and the figures (PNG and
    PDF); return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    figures = write_plots(results, out)
    table = entropy_vs_scores(results)
    counts = table.select(*COUNTS).sum().row(0, named=True)
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
        "## Verdicts", markdown(verdicts(correlations(results))),
        "## What each regime's data encode", markdown(regimes(results)),
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
