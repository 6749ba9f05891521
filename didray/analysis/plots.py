"""Figures of a sweep, sized and labelled for a paper: each `plot_*` function returns a
matplotlib `Figure` (shown inline by a notebook), and `save` writes it as PNG and PDF.

Figures are built on `Figure` objects rendered by Agg, never pyplot: no display needed on
cluster nodes and CI, and no global backend switched under a notebook user. Axis names come
from the metric registry (`didray.metrics.axis_label`). Points are means over a (regime, beta)
cell's finished seeds with +-1 s.d. error bars; colour = regime, marker or line style = beta,
in one legend per figure. Failed and running trials contribute what they reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
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
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False,
         "axes.spines.right": False, "pdf.fonttype": 42,  # TrueType: text stays editable
         "savefig.dpi": 200}


class Style:
    """Colour per regime (sweep-prefixed when several sweeps share a figure) and marker /
    line style per training beta, fixed once per figure so every panel agrees."""

    def __init__(self, frame: pl.DataFrame) -> None:
        self.several = frame["sweep"].n_unique() > 1
        labels = self.labelled(frame)["label"].unique(maintain_order=True).drop_nulls()
        self.colours = {name: f"C{i % 10}" for i, name in enumerate(labels.to_list())}
        self.betas = sorted(frame["beta"].drop_nulls().unique().to_list())

    def labelled(self, frame: pl.DataFrame) -> pl.DataFrame:
        label = pl.format("{}/{}", "sweep", "regime") if self.several else pl.col("regime")
        return frame.with_columns(label.alias("label")).sort("label", "beta")

    def marker(self, beta: float) -> str:
        return MARKERS[self.betas.index(beta) % len(MARKERS)]

    def linestyle(self, beta: float) -> str:
        return LINESTYLES[self.betas.index(beta) % len(LINESTYLES)]

    def handles(self, lines: bool = False) -> list[Line2D]:
        """Legend entries: one per regime (its colour), then one per beta (its marker, or
        its line style for curves)."""
        shape = {"marker": None, "linestyle": "-"} if lines else {"marker": "s", "linestyle": ""}
        regimes = [Line2D([], [], color=c, label=name, **shape) for name, c in self.colours.items()]
        betas = [Line2D([], [], color="0.35", label=f"β = {beta:g}",
                        **({"linestyle": self.linestyle(beta)} if lines
                           else {"marker": self.marker(beta), "linestyle": ""}))
                 for beta in self.betas]
        return regimes + betas


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


def _scatter(axis: Axes, means: pl.DataFrame, score: str, style: Style) -> None:
    """The cells' means with +-1 s.d. error bars on both axes."""
    for row in means.drop_nulls(["did_entropy", score]).iter_rows(named=True):
        axis.errorbar(row["did_entropy"], row[score], xerr=row["did_entropy_sd"] or 0,
                      yerr=row[f"{score}_sd"] or 0, color=style.colours[row["label"]],
                      marker=style.marker(row["beta"]), markersize=4, linestyle="",
                      elinewidth=0.6, capsize=1.5, alpha=0.85)


def _score_panels(results: Results, axes: Sequence[Axes], scores: Sequence[str]) -> Style:
    """DID entropy against each score, one score per axis, annotated with its correlation."""
    means = cell_means(results, scores)
    style = Style(means)
    means = style.labelled(means)
    corr = correlations(results)
    several = corr.select("sweep", ESTIMATOR).n_unique() > 1
    for axis, score in zip(axes, scores, strict=True):
        _scatter(axis, means, score, style)
        axis.set_ylabel(axis_label(score))
        axis.grid(alpha=0.3, linewidth=0.5)
        text = rho_text(corr.filter(pl.col("score") == score), several)
        axis.set_title(text or "ρ: too few finished trials", fontsize=6.5)
        if means.is_empty():
            axis.text(0.5, 0.5, "no finished trial yet", transform=axis.transAxes,
                      ha="center", va="center", color="0.4")
    return style


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
        figure.legend(handles=style.handles(), loc="outside lower center" if column
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
        legend_slot.legend(handles=style.handles(), loc="center", frameon=False, ncols=2)
    return figure


def plot_dynamics(results: Results) -> Figure:
    """One panel per training metric against step: mean over seeds, band = +-1 s.d.,
    colour = regime, line style = training beta; one legend below."""
    curves = dynamics(results)
    metrics = _reported(curves, CURVES, "_mean")
    with matplotlib.rc_context(STYLE):
        figure = Figure(layout="constrained")
        axes = _grid(figure, len(metrics), row_height=1.6)
        style = Style(curves)
        curves = style.labelled(curves)
        for axis, metric in zip(axes, metrics, strict=False):
            _curves(axis, curves, metric, style)
            axis.set(xlabel=axis_label("step"), ylabel=axis_label(metric))
            axis.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))  # whole steps
            axis.grid(alpha=0.3, linewidth=0.5)
        figure.legend(handles=style.handles(lines=True), loc="outside lower center",
                      ncols=min(len(style.handles()), 6), frameon=False)
        if curves.is_empty():
            figure.suptitle("no step reported yet")
    return figure


def _curves(axis: Axes, curves: pl.DataFrame, metric: str, style: Style) -> None:
    for (label, beta), group in curves.group_by("label", "beta", maintain_order=True):
        group = group.drop_nulls(f"{metric}_mean")
        mean, sd = group[f"{metric}_mean"], group[f"{metric}_std"].fill_null(0.0)
        colour = style.colours[label]
        axis.plot(group["step"], mean, color=colour, linestyle=style.linestyle(beta),
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
