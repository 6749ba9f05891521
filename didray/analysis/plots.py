"""PNG figures of a sweep (matplotlib `Figure` objects rendered by Agg, never pyplot: no display
needed on cluster nodes and CI, and no global backend switched under a notebook user).

Each figure collects its data once from the lazy results and draws every point or curve it
has: failed and running trials simply contribute what they reported.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from didray.analysis.load import Results
from didray.analysis.tables import CORRELATED, CURVES, ESTIMATOR, FINISHED, dynamics

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


def _grid(count: int, columns: int = 3) -> tuple[Figure, list[Axes]]:
    rows = -(-count // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    flat = list(axes.flat)
    for unused in flat[count:]:
        unused.set_visible(False)
    return figure, flat[:count]


def _labelled(frame: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str], list[float]]:
    """`frame` with a regime `label` (sweep-prefixed when several sweeps share a figure),
    sorted for a stable legend; the colour of each label; the betas in order."""
    several = frame["sweep"].n_unique() > 1
    label = pl.format("{}/{}", "sweep", "regime") if several else pl.col("regime")
    frame = frame.with_columns(label.alias("label")).sort("label", "beta")
    labels = frame["label"].unique(maintain_order=True).drop_nulls().to_list()
    colours = {name: f"C{i % 10}" for i, name in enumerate(labels)}
    return frame, colours, sorted(frame["beta"].unique().drop_nulls().to_list())


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def plot_entropy_vs_scores(results: Results, path: Path) -> Path:
    """One panel per downstream score: finished trials at (DID entropy, score), colour = regime,
    marker = training beta; the x label names the DID-entropy estimator(s) behind the points."""
    trials = (results.trials.filter(FINISHED)
              .select("sweep", "regime", "beta", ESTIMATOR, "did_entropy", *CORRELATED).collect())
    trials, colours, betas = _labelled(trials)
    estimators = ", ".join(sorted(trials[ESTIMATOR].drop_nulls().unique().to_list()))
    xlabel = f"DID entropy: {estimators} (nats)" if estimators else "DID entropy (nats)"
    figure, axes = _grid(len(CORRELATED))
    for axis, score in zip(axes, CORRELATED, strict=True):
        for (label, beta), group in trials.group_by("label", "beta", maintain_order=True):
            axis.scatter(group["did_entropy"], group[score], color=colours[label],
                         marker=MARKERS[betas.index(beta) % len(MARKERS)], alpha=0.8,
                         label=f"{label}, beta={beta:g}")
        axis.set(xlabel=xlabel, ylabel=score, title=f"DID entropy vs {score}")
        axis.grid(alpha=0.3)
    return _finish(figure, axes, trials.height, "no finished trial yet", path)


def _finish(figure, axes, rows: int, empty: str, path: Path) -> Path:
    """A legend when something was drawn, else a title saying why the panels are empty."""
    if rows:
        axes[0].legend(fontsize=7)
    else:
        figure.suptitle(empty)
    return _save(figure, path)


def plot_dynamics(results: Results, path: Path) -> Path:
    """One panel per training metric: mean over seeds against step, band = +-1 std, colour =
    regime, line style = training beta."""
    curves, colours, betas = _labelled(dynamics(results))
    figure, axes = _grid(len(CURVES), columns=4)
    for axis, metric in zip(axes, CURVES, strict=True):
        for (label, beta), group in curves.group_by("label", "beta", maintain_order=True):
            group = group.drop_nulls(f"{metric}_mean")
            mean, std = group[f"{metric}_mean"], group[f"{metric}_std"].fill_null(0.0)
            style = LINESTYLES[betas.index(beta) % len(LINESTYLES)]
            axis.plot(group["step"], mean, color=colours[label], linestyle=style,
                      label=f"{label}, beta={beta:g}")
            axis.fill_between(group["step"], mean - std, mean + std, color=colours[label],
                              alpha=0.15)
        axis.set(xlabel="step", ylabel=metric, title=metric)
        axis.grid(alpha=0.3)
    return _finish(figure, axes, curves.height, "no step reported yet", path)


def write_plots(results: Results, out: Path) -> list[Path]:
    """entropy_vs_scores.png and dynamics.png under `out`; returns their paths."""
    return [plot_entropy_vs_scores(results, out / "entropy_vs_scores.png"),
            plot_dynamics(results, out / "dynamics.png")]
