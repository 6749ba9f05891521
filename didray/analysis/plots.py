"""Figures of a sweep, sized and labelled for a paper: each `plot_*` function returns a
matplotlib `Figure` (shown inline by a notebook), and `save` writes it as PNG and PDF.

Figures are built on `Figure` objects rendered by Agg, never pyplot: no display needed on
cluster nodes and CI, and no global backend switched under a notebook user. Axis names come
from the metric registry (`didray.metrics.axis_label`). Points are means over a (regime, beta)
cell's finished seeds with +-1 s.d. error bars (none where the spread is zero or undefined: one
seed); colour = regime, marker = beta, in one legend per figure. Failed and running trials
contribute what they reported.

Colours (`regime_colours`): the regimes of the ladder, the regime kind whose regimes' data
encode the most distinct DID entropies (`data_did_entropy`; powerlaw in a toy sweep), are
coloured by that level, low to high along viridis; every other regime (offpolicy, pg, a ladder
regime repeating a level) gets a neutral colour of its own. Legend entries for regimes are
colour patches (lines in curves), never a marker shape a beta uses.

Score panels mark pi_ref's value of a score, where steps.parquet has it at step 0, with a
dashed line the legend names "π_ref". Points whose score ties exactly (QA accuracy: a fraction
of a few questions) are spread vertically around the value, in legend order, by at most half
the gap to the next value; the legend says so. Dynamics: one row per metric, one column per
beta, one line per regime; reward accuracy starts after step 0 (every reward is 0 at pi_ref,
so accuracy is undefined there, not 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import polars as pl
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from didray.analysis.load import Results
from didray.analysis.tables import (
    CORRELATED,
    CURVES,
    ESTIMATOR,
    FINISHED,
    correlations,
    dynamics,
    weight_correlations,
)
from didray.metrics import axis_label

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
WIDTHS = {"column": 3.25, "page": 6.75}  # inches: one column and a full page of a paper
HEADLINE = ("instruction_score", "qa_accuracy")
FORMATS = ("png", "pdf")
# Neutral colours for regimes off the DID-entropy ladder: none is a viridis colour.
NEUTRALS = ("#a65628", "0.5", "#e7298a", "#d95f02", "0.2", "0.75")
LADDER = matplotlib.colormaps["viridis"]
LADDER_SPAN = (0.0, 0.85)  # viridis' palest yellow hides on white
# pi_ref's value of a trial score: the step-0 row of steps.parquet (the policy before training).
PI_REF = {"instruction_score": "eval/instruction_score", "qa_accuracy": "eval/qa_accuracy"}
# Curves undefined at pi_ref: at step 0 every pair's reward is 0, a tie, so no accuracy.
UNDEFINED_AT_PI_REF = ("rewards/accuracies",)
TIES = "tied values spread ↕"
PI_REF_COLOUR = "0.3"
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
         "axes.spines.right": False, "pdf.fonttype": 42,  # TrueType: text stays editable
         "savefig.dpi": 200}


def regime_levels(results: Results) -> pl.DataFrame:
    """One row per (sweep, regime): its kind and the mean DID entropy its data encode
    (`data_did_entropy`, null where the trials do not carry it)."""
    return (results.trials.group_by("sweep", "regime")
            .agg(kind=pl.col("regime_kind").drop_nulls().first(),
                 level=pl.col("data_did_entropy").mean())
            .collect())


def regime_colours(regimes: Sequence[tuple[str, str | None, float | None]]) -> dict[str, str]:
    """Colour per regime label from (label, kind, level) triples, ladder first, low to high
    level, then the others in the order given. The ladder is the kind with the most distinct
    levels (at least two); its regimes get viridis by level rank, any regime repeating a level
    already on it joins the others, which get `NEUTRALS` in turn."""
    counts: dict[str, set[float]] = {}
    for _, kind, level in regimes:
        if level is not None:
            counts.setdefault(kind or "", set()).add(level)
    ladder_kind = max(counts, key=lambda k: (len(counts[k]), k), default=None)
    ladder: dict[float, str] = {}
    others: list[str] = []
    for label, kind, level in regimes:
        on = (ladder_kind is not None and len(counts[ladder_kind]) > 1
              and (kind or "") == ladder_kind and level is not None and level not in ladder)
        if on:
            ladder[level] = label
        else:
            others.append(label)
    rungs = [ladder[level] for level in sorted(ladder)]
    low, high = LADDER_SPAN
    colours = {label: matplotlib.colors.to_hex(LADDER(low + (high - low) * i / (len(rungs) - 1)))
               for i, label in enumerate(rungs)}
    colours.update({label: NEUTRALS[i % len(NEUTRALS)] for i, label in enumerate(others)})
    return colours


class Style:
    """Colour per regime (sweep-prefixed when several sweeps share a figure; see
    `regime_colours`) and marker / line style per training beta, fixed once per figure so
    every panel agrees."""

    def __init__(self, frame: pl.DataFrame, levels: pl.DataFrame | None = None) -> None:
        self.several = frame["sweep"].n_unique() > 1
        cells = self.labelled(frame).select("sweep", "regime", "label").unique(maintain_order=True)
        cells = cells.drop_nulls("label")
        if levels is None or levels.is_empty():
            cells = cells.with_columns(kind=pl.lit(None, pl.String), level=pl.lit(None, pl.Float64))
        else:
            cells = cells.join(levels, on=["sweep", "regime"], how="left", maintain_order="left")
        self.colours = regime_colours(cells.select("label", "kind", "level").rows())
        self.betas = sorted(frame["beta"].drop_nulls().unique().to_list())
        self.tied = False  # set by the score panels where they spread tied values
        self.pi_ref = False  # and where they drew pi_ref's line

    def labelled(self, frame: pl.DataFrame) -> pl.DataFrame:
        label = pl.format("{}/{}", "sweep", "regime") if self.several else pl.col("regime")
        return frame.with_columns(label.alias("label")).sort("label", "beta")

    def order(self, label: str) -> int:
        return list(self.colours).index(label)

    def marker(self, beta: float) -> str:
        return MARKERS[self.betas.index(beta) % len(MARKERS)]

    def linestyle(self, beta: float) -> str:
        return LINESTYLES[self.betas.index(beta) % len(LINESTYLES)]

    def handles(self, lines: bool = False, betas: bool = True) -> list[Artist]:
        """Legend entries: one per regime (a colour patch, or a solid line for curves: no
        marker shape), then one per beta (its marker, or its line style for curves)."""
        regimes: list[Artist] = [
            Line2D([], [], color=c, label=name, linewidth=1.5) if lines
            else Patch(facecolor=c, edgecolor="none", label=name)
            for name, c in self.colours.items()]
        marks = [Line2D([], [], color="0.35", label=f"β = {beta:g}",
                        **({"linestyle": self.linestyle(beta)} if lines
                           else {"marker": self.marker(beta), "linestyle": ""}))
                 for beta in (self.betas if betas else [])]
        return regimes + marks


def cell_means(results: Results, scores: Sequence[str]) -> pl.DataFrame:
    """One row per (sweep, regime, beta, estimator) of finished trials: mean and s.d. over
    seeds of DID entropy and each score (s.d. null with one seed)."""
    values = ["did_entropy", *scores]
    return (results.trials.filter(FINISHED)
            .group_by("sweep", "regime", "beta", ESTIMATOR)
            .agg(*[pl.col(c).mean() for c in values],
                 *[pl.col(c).std().alias(f"{c}_sd") for c in values])
            .collect())


def rho_text(rows: pl.DataFrame, several: bool) -> str:
    """The Spearman correlations of one score as a panel's title: "ρ within β" (they are
    taken within training beta), the trials behind it and its 95% bootstrap interval; two
    lines per sweep and estimator, each named when there are several."""
    lines = []
    for row in rows.iter_rows(named=True):
        if row["spearman"] is None:
            continue
        name = f"{row['sweep']}, {row[ESTIMATOR]}: " if several else ""
        lines.append(f"{name}ρ within β = {number(row['spearman'])}, n = {row['n']}")
        if row["spearman_ci_low"] is not None:
            lines.append(f"95% CI [{number(row['spearman_ci_low'])}, "
                         f"{number(row['spearman_ci_high'])}]")
    return "\n".join(lines)


def number(value: float) -> str:
    """Two decimals with a typographic minus, as the tick labels have."""
    return f"{value:.2f}".replace("-", "\N{MINUS SIGN}")


def _spread(value: float | None) -> float | None:
    """An error bar's half-length, or None (no bar) where the spread is zero or undefined."""
    return value if value else None


def tie_offsets(values: Sequence[float], order: Sequence[int]) -> np.ndarray:
    """Vertical offsets that spread points of exactly equal value around it, in `order`
    (deterministic: legend order, then beta); points of a value of their own stay put. A tie
    of m points is at most half the gap to the nearest other value wide, and each step at most
    3% of the values' range."""
    y = np.round(np.asarray(values, dtype=float), 9)  # a mean of equal fractions is equal
    offsets = np.zeros(len(y))
    if not len(y):
        return offsets
    levels = np.unique(y)
    span = float(np.ptp(y)) or max(abs(float(y[0])), 1.0)
    gap = float(np.diff(levels).min()) if len(levels) > 1 else span
    for level in levels:
        tied = np.flatnonzero(y == level)
        if len(tied) < 2:
            continue
        step = min(0.03 * span, 0.5 * gap / (len(tied) - 1))
        ranked = tied[np.argsort([order[i] for i in tied], kind="stable")]
        offsets[ranked] = (np.arange(len(tied)) - (len(tied) - 1) / 2) * step
    return offsets


def _scatter(axis: Axes, means: pl.DataFrame, score: str, style: Style) -> bool:
    """The cells' means with +-1 s.d. error bars on both axes, no bar where the spread is zero
    or null (one seed); tied values spread vertically (`tie_offsets`). True if any were."""
    rows = list(means.drop_nulls(["did_entropy", score]).iter_rows(named=True))
    order = [style.order(r["label"]) * len(style.betas) + style.betas.index(r["beta"])
             for r in rows]
    offsets = tie_offsets([r[score] for r in rows], order)
    for row, offset in zip(rows, offsets, strict=True):
        axis.errorbar(row["did_entropy"], row[score] + offset,
                      xerr=_spread(row["did_entropy_sd"]), yerr=_spread(row[f"{score}_sd"]),
                      color=style.colours[row["label"]], marker=style.marker(row["beta"]),
                      markersize=4, linestyle="", elinewidth=0.6, capsize=1.5, alpha=0.85)
    return bool(np.any(offsets))


def pi_ref_values(results: Results, score: str) -> list[tuple[str, float]]:
    """(sweep, pi_ref's mean value of `score`) from the step-0 rows of steps.parquet, one per
    sweep that has it; none for a score without a step-0 counterpart."""
    metric = PI_REF.get(score)
    if metric is None:
        return []
    rows = (results.steps.filter(pl.col("step") == 0).group_by("sweep")
            .agg(pl.col(metric).mean()).drop_nulls(metric).sort("sweep").collect())
    return rows.rows()


def _pi_ref_line(axis: Axes, values: Sequence[tuple[str, float]]) -> bool:
    """A dashed line at pi_ref's value (the legend names it), one per sweep whose value
    differs, then named by its sweep at the line's left end. True if any was drawn."""
    distinct = {round(value, 12): sweep for sweep, value in reversed(values)}
    for value, sweep in distinct.items():
        axis.axhline(value, color=PI_REF_COLOUR, linestyle="--", linewidth=0.8, zorder=0.5)
        if len(distinct) > 1:
            axis.annotate(sweep, (0.0, value), xycoords=("axes fraction", "data"),
                          xytext=(2, 1.5), textcoords="offset points", fontsize=6,
                          color=PI_REF_COLOUR)
    return bool(distinct)


def _score_panels(results: Results, axes: Sequence[Axes], scores: Sequence[str]) -> Style:
    """DID entropy against each score, one score per axis, annotated with its correlation and
    pi_ref's value where known. The style's `tied` is set if any panel spread tied values."""
    means = cell_means(results, scores)
    style = Style(means, regime_levels(results))
    means = style.labelled(means)
    corr = correlations(results)
    several = corr.select("sweep", ESTIMATOR).n_unique() > 1
    for axis, score in zip(axes, scores, strict=True):
        style.tied |= _scatter(axis, means, score, style)
        style.pi_ref |= _pi_ref_line(axis, pi_ref_values(results, score))
        axis.set_ylabel(axis_label(score))
        axis.grid(alpha=0.3, linewidth=0.5)
        text = rho_text(corr.filter(pl.col("score") == score), several)
        axis.set_title(text or "ρ: too few finished trials", fontsize=6.5)
        if means.is_empty():
            axis.text(0.5, 0.5, "no finished trial yet", transform=axis.transAxes,
                      ha="center", va="center", color="0.4")
    return style


def _score_handles(style: Style) -> list[Artist]:
    """The scatter legend: regimes, betas, pi_ref's line where drawn, and a note where tied
    values were spread."""
    line = [Line2D([], [], color=PI_REF_COLOUR, linestyle="--", linewidth=0.8, label="π_ref")]
    note = [Line2D([], [], linestyle="", label=TIES)]
    return style.handles() + line * style.pi_ref + note * style.tied


def _entropy_label(results: Results) -> str:
    """The x axis of DID-entropy plots, naming the estimator(s) when not all exact."""
    estimators = (results.trials.filter(FINISHED).select(pl.col(ESTIMATOR).drop_nulls().unique())
                  .collect()[ESTIMATOR].sort().to_list())
    label = axis_label("did_entropy")
    return label if estimators in ([], ["exact"]) else f"{label}: {', '.join(estimators)}"


def plot_headline(results: Results, width: str = "column") -> Figure:
    """The headline figure: learned DID entropy against instruction score and against QA
    accuracy, each annotated with Spearman ρ within β and its 95% bootstrap interval.
    width "column" (3.25 in: panels stacked, sharing the x axis) or "page" (6.75 in: side
    by side)."""
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {', '.join(WIDTHS)}, got {width!r}")
    column = width == "column"
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(WIDTHS[width], 4.4 if column else 2.6), layout="constrained")
        axes = figure.subplots(2 if column else 1, 1 if column else 2, sharex=column).flat
        style = _score_panels(results, list(axes), HEADLINE)
        for axis in figure.axes[-1:] if column else figure.axes:
            axis.set_xlabel(_entropy_label(results))
        figure.legend(handles=_score_handles(style), loc="outside lower center" if column
                      else "outside right center", ncols=3 if column else 1, frameon=False,
                      handletextpad=0.3, columnspacing=1.0)
    return figure


def _grid(figure: Figure, count: int, row_height: float) -> list[Axes]:
    """`count` panels in rows of (at most) four, page width; the slots past `count` hidden."""
    columns = min(count, 4)
    rows = -(-count // columns)
    figure.set_size_inches(WIDTHS["page"], row_height * rows + 0.5)
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for unused in axes[count:]:
        unused.axis("off")
    return axes


def _reported(frame: pl.DataFrame, columns: Sequence[str], suffix: str = "") -> list[str]:
    """The columns with at least one value (an hf sweep has no toy-only metric): no empty
    panels; all of them when nothing is reported yet."""
    shown = [c for c in columns if frame[f"{c}{suffix}"].drop_nulls().len()]
    return shown or list(columns)


def plot_entropy_vs_scores(results: Results) -> Figure:
    """Every correlated score that has values against DID entropy, four panels a row, the
    legend in the slot after the last, each panel annotated with ρ within β."""
    scores = _reported(cell_means(results, CORRELATED), CORRELATED)
    with matplotlib.rc_context(STYLE):
        figure = Figure(layout="constrained")
        axes = _grid(figure, len(scores) + 1, row_height=2.0)
        style = _score_panels(results, axes[:len(scores)], scores)
        for axis in axes[:len(scores)]:
            axis.set_xlabel(_entropy_label(results))
        legend_slot = axes[len(scores)]
        legend_slot.axis("off")
        legend_slot.legend(handles=_score_handles(style), loc="center", frameon=False,
                           ncols=2)
    return figure


def plot_dynamics(results: Results) -> Figure:
    """Training curves against step: one row per reported metric and, with several training
    betas, one column per beta (rows share their y axis), so each panel has one line per
    regime: mean over seeds, band = +-1 s.d., colour = regime; one legend below. With one beta,
    the metrics' panels four a row. Reward accuracy starts after step 0, where it is
    undefined (`UNDEFINED_AT_PI_REF`)."""
    curves = dynamics(results)
    metrics = _reported(curves, CURVES, "_mean")
    with matplotlib.rc_context(STYLE):
        figure = Figure(layout="constrained")
        style = Style(curves, regime_levels(results))
        curves = style.labelled(curves)
        columns = len(style.betas) > 1
        if columns:
            figure.set_size_inches(WIDTHS["page"], 1.3 * len(metrics) + 0.6)
            grid = figure.subplots(len(metrics), len(style.betas), squeeze=False, sharex=True,
                                   sharey="row")
            panels = [(grid[r][c], metric, beta) for r, metric in enumerate(metrics)
                      for c, beta in enumerate(style.betas)]
        else:
            axes = _grid(figure, len(metrics), row_height=1.6)
            panels = [(axis, metric, None) for axis, metric in zip(axes, metrics, strict=False)]
        for axis, metric, beta in panels:
            cells = curves if beta is None else curves.filter(pl.col("beta") == beta)
            _curves(axis, cells, metric, style, solid=columns)
            axis.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # whole steps
            axis.grid(alpha=0.3, linewidth=0.5)
            if not columns or axis.get_subplotspec().is_first_col():
                axis.set_ylabel(axis_label(metric))
            if not columns or axis.get_subplotspec().is_last_row():
                axis.set_xlabel(axis_label("step"))
            if columns and axis.get_subplotspec().is_first_row():
                axis.set_title(f"β = {beta:g}")
        handles = style.handles(lines=True, betas=not columns)
        figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6),
                      frameon=False)
        if curves.is_empty():
            figure.suptitle("no step reported yet")
    return figure


def _curves(axis: Axes, curves: pl.DataFrame, metric: str, style: Style,
            solid: bool = False) -> None:
    """One line per (regime, beta) in `curves`, mean with a +-1 s.d. band, in beta's line
    style unless `solid` (a panel of one beta); a metric undefined at pi_ref without its step
    0, and a note saying so."""
    if metric in UNDEFINED_AT_PI_REF and (curves["step"] == 0).any():
        axis.text(0.02, 0.97, "step 0:\nundefined", fontsize=5.5,
                  color="0.4", transform=axis.transAxes, ha="left", va="top")
    for (label, beta), group in curves.group_by("label", "beta", maintain_order=True):
        group = group.drop_nulls(f"{metric}_mean")
        if metric in UNDEFINED_AT_PI_REF:
            group = group.filter(pl.col("step") > 0)
        if group.is_empty():
            continue
        mean, sd = group[f"{metric}_mean"], group[f"{metric}_std"].fill_null(0.0)
        colour = style.colours[label]
        axis.plot(group["step"], mean, color=colour, linestyle="-" if solid
                  else style.linestyle(beta),
                  linewidth=1.0, marker="o" if group.height == 1 else None,  # a lone report
                  markersize=3)
        axis.fill_between(group["step"], mean - sd, mean + sd, color=colour, alpha=0.12,
                          linewidth=0)


def plot_judge_weights(weights: pl.DataFrame) -> Figure:
    """The instruction claim against the judge weight w (docs/design.md §3.6): Spearman within
    β of DID entropy and instruction_score recomputed at w, its 95% interval as a band, one
    line per sweep (and estimator); a dotted line at the pre-registered w and, where the
    correlation changes sign, the w it crosses 0 at (linear between the two weights around
    it). `weights` is `tables.weight_correlations`."""
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(WIDTHS["column"], 2.6), layout="constrained")
        axis = figure.subplots()
        groups = weights.drop_nulls("spearman").partition_by("sweep", ESTIMATOR,
                                                               maintain_order=True)
        for i, group in enumerate(groups):
            colour, (sweep, estimator) = f"C{i % 10}", group.row(0)[:2]
            w, rho = group["judge_weight"].to_numpy(), group["spearman"].to_numpy()
            axis.plot(w, rho, color=colour, marker="o", markersize=3, linewidth=1.0,
                      label=f"{sweep}, {estimator}" if len(groups) > 1 else None)
            band = group.drop_nulls("spearman_ci_low")
            axis.fill_between(band["judge_weight"], band["spearman_ci_low"],
                              band["spearman_ci_high"], color=colour, alpha=0.15, linewidth=0)
            for own in group.filter("preregistered")["judge_weight"]:
                axis.axvline(own, color=colour, linestyle=":", linewidth=1.0)
                # above the panel, where no curve or band can hide it
                axis.annotate(f"pre-registered w = {own:g}", (own, 1.0), fontsize=6.5,
                              xycoords=("data", "axes fraction"), xytext=(0, 2),
                              textcoords="offset points", ha="center", va="bottom")
            for k in np.flatnonzero(np.sign(rho[:-1]) * np.sign(rho[1:]) < 0):
                cross = w[k] + (w[k + 1] - w[k]) * rho[k] / (rho[k] - rho[k + 1])
                axis.plot([cross], [0], marker="x", color=colour, markersize=5)
                right = cross < 0.5  # the label on the side with room, inside the panel
                axis.annotate(f"ρ = 0 near w = {cross:.2f}", (cross, 0), fontsize=6.5,
                              xytext=(5 if right else -5, -5), textcoords="offset points",
                              ha="left" if right else "right", va="top", color=colour,
                              bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8,
                                    "pad": 1})
        axis.axhline(0, color="0.4", linewidth=0.6)
        axis.set(xlim=(0, 1), ylim=(-1.05, 1.05), xlabel=axis_label("judge_weight"),
                 ylabel="ρ(DID entropy, instruction) within β")
        axis.grid(alpha=0.3, linewidth=0.5)
        if len(groups) > 1:
            axis.legend(frameon=False, loc="lower right")
        if not groups:
            axis.text(0.5, 0.5, "ρ undefined at every w: too few finished trials",
                      transform=axis.transAxes, ha="center", va="center", color="0.4")
    return figure


def save(figure: Figure, stem: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """`stem`.png, `stem`.pdf (or the given formats); returns their paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(f".{fmt}") for fmt in formats]
    with matplotlib.rc_context(STYLE):
        for path in paths:
            figure.savefig(path)
    return paths


def write_plots(results: Results, out: Path) -> list[Path]:
    """The headline figure (column and page width), entropy_vs_scores, dynamics and, where
    trials store the judge's two parts (toy), judge_weights under `out`, each as PNG and PDF;
    returns their paths, PNGs first of each."""
    figures = {"headline": plot_headline(results, "column"),
               "headline-page": plot_headline(results, "page"),
               "entropy_vs_scores": plot_entropy_vs_scores(results),
               "dynamics": plot_dynamics(results)}
    weights = weight_correlations(results)
    if not weights.is_empty():
        figures["judge_weights"] = plot_judge_weights(weights)
    return [path for name, figure in figures.items() for path in save(figure, out / name)]
