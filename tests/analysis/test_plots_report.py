"""Figures and the markdown capability report: what each figure shows, and every file written
as a valid PNG or PDF."""

import math

import numpy as np
import polars as pl
import pytest
from matplotlib.colors import to_rgb
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Patch
from support.judged import judge_frame

from didray.analysis import correlations, load
from didray.analysis.load import Results
from didray.analysis.plots import (
    MARKERS,
    NEUTRALS,
    TIES,
    number,
    plot_dynamics,
    plot_entropy_vs_scores,
    plot_headline,
    plot_judge_weights,
    regime_colours,
    save,
    tie_offsets,
    write_plots,
)
from didray.analysis.report import (
    capability_report,
    judge_weights,
    print_tables,
    readable,
    verdicts,
)
from didray.analysis.tables import weight_correlations

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-"}


def assert_image(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes().startswith(MAGIC[path.suffix])


def shown(figure):
    """The panels that are drawn (a hidden slot or the legend's slot is off)."""
    return [axis for axis in figure.axes if axis.axison]


def test_every_figure_is_written_as_png_and_pdf(results, tmp_path):
    paths = write_plots(results, tmp_path / "figures")
    assert [p.name for p in paths] == [
        f"{stem}.{fmt}" for stem in ("headline", "headline-page", "entropy_vs_scores", "dynamics")
        for fmt in ("png", "pdf")]
    for path in paths:
        assert_image(path)


@pytest.mark.parametrize(("width", "inches"), [("column", 3.25), ("page", 6.75)])
def test_headline_panels_labels_and_size(results, width, inches):
    figure = plot_headline(results, width)
    assert figure.get_size_inches()[0] == inches
    axes = shown(figure)
    assert [a.get_ylabel() for a in axes] == ["instruction score", "QA accuracy"]
    assert axes[-1].get_xlabel() == "DID entropy (nats)"


def test_headline_annotates_spearman_within_beta(results):
    """Within beta 0.1 the five finished trials rank the same on DID entropy and instruction
    score (rho 1); on QA accuracy (1, 0, 1, 0, 0 at increasing entropy) rho is
    -5 / sqrt(10 * 7.5) = -0.58; beta 0.5 has one trial, which adds nothing. The trials come
    from two regimes, two datasets: too few independent units for an interval."""
    titles = [a.get_title() for a in shown(plot_headline(results))]
    table = correlations(results).filter(pl.col("score").is_in(["instruction_score",
                                                                 "qa_accuracy"]))
    for title, row in zip(titles, table.sort("score").iter_rows(named=True), strict=True):
        assert f"ρ within β = {number(row['spearman'])}, n = 6" in title
        assert row["units"] == 2 and "95% CI" not in title
    assert titles[0].startswith("ρ within β = 1.00") and "−0.58" in titles[1]


def test_one_legend_names_regimes_by_colour_and_betas_by_marker(results):
    """Regimes are colour patches, betas marker shapes: no regime entry looks like a beta's
    marker. QA accuracy 0 is a tie (pg at beta 0.5, pl at 0.1): the legend says ties spread."""
    figure = plot_headline(results, "page")
    assert len(figure.legends) == 1 and not any(a.get_legend() for a in figure.axes)
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["pg", "pl", "β = 0.1", "β = 0.5", TIES]
    regimes, betas = legend.legend_handles[:2], legend.legend_handles[2:4]
    assert all(isinstance(h, Patch) for h in regimes)
    assert [h.get_marker() for h in betas] == list(MARKERS[:2])


def test_curve_legend_regimes_are_plain_lines(results):
    handles = plot_dynamics(results).legends[0].legend_handles
    assert [h.get_label() for h in handles] == ["pg", "pl"]  # betas are the columns
    assert all(h.get_marker() in ("None", None, "") and h.get_linestyle() == "-"
               for h in handles)


def bars(axis):
    return [c for c in axis.containers if isinstance(c, ErrorbarContainer)]


def test_no_error_bar_where_the_spread_is_zero_or_undefined(results):
    """pg at beta 0.5 has one finished seed: no bar either way (a zero-length bar drew its
    caps as a "+"); pl at beta 0.1 has QA accuracy 0 and 0: an x bar only."""
    qa = shown(plot_headline(results))[1]
    by_x = {c.lines[0].get_xdata()[0]: c for c in bars(qa)}
    assert (by_x[4.0].has_xerr, by_x[4.0].has_yerr) == (False, False)
    assert not by_x[4.0].lines[1] and not by_x[4.0].lines[2]  # no caps, no bar lines
    assert (by_x[6.0].has_xerr, by_x[6.0].has_yerr) == (True, False)
    assert (by_x[2.0].has_xerr, by_x[2.0].has_yerr) == (True, True)


def test_tied_scores_spread_symmetrically_in_legend_order(results):
    """QA accuracy 0 for pg at beta 0.5 and pl at 0.1, 2/3 for pg at 0.1: the tied two sit
    either side of 0 (pg first in the legend, below), at most half the gap to 2/3 apart;
    the lone value stays put."""
    qa = shown(plot_headline(results))[1]
    y = {c.lines[0].get_xdata()[0]: c.lines[0].get_ydata()[0] for c in bars(qa)}
    assert y[2.0] == pytest.approx(2 / 3)
    assert y[4.0] < 0 < y[6.0] and y[4.0] == pytest.approx(-y[6.0])
    assert y[6.0] - y[4.0] <= (2 / 3) / 2


def test_tie_offsets_leave_distinct_values_alone():
    assert list(tie_offsets([0.1, 0.2, 0.3], [0, 1, 2])) == [0, 0, 0]
    offsets = tie_offsets([0.5, 0.5, 0.5, 1.0], [2, 0, 1, 3])
    assert offsets[3] == 0 and offsets[1] < offsets[2] < offsets[0]  # in the order given
    assert offsets[:3].sum() == pytest.approx(0) and np.ptp(offsets[:3]) <= 0.25
    assert list(tie_offsets([1 / 3 + 1e-15, 1 / 3], [0, 1])) != [0, 0]  # equal up to rounding


def luminance(colour):
    r, g, b = to_rgb(colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_ladder_regimes_are_coloured_in_order_of_their_data_entropy():
    """The powerlaw regimes (the kind with the most levels) run dark to light by level
    whatever order they come in; pg repeating a level and offpolicy get neutral colours."""
    colours = regime_colours([("pg-H2.5", "pg", 2.5), ("H4", "powerlaw", 4.0),
                              ("H1", "powerlaw", 1.0), ("offpolicy", "offpolicy", 0.85),
                              ("H2.5", "powerlaw", 2.5), ("H5.5", "powerlaw", 5.5)])
    assert list(colours) == ["H1", "H2.5", "H4", "H5.5", "pg-H2.5", "offpolicy"]
    ladder = [luminance(colours[r]) for r in ("H1", "H2.5", "H4", "H5.5")]
    assert ladder == sorted(ladder) and len(set(ladder)) == 4
    assert [colours["pg-H2.5"], colours["offpolicy"]] == list(NEUTRALS[:2])
    assert len(set(colours.values())) == 6


def test_regimes_without_levels_get_distinct_neutral_colours(results):
    """No data_did_entropy (or one level): no ladder, nothing implies an order."""
    assert regime_colours([("a", "pg", None), ("b", None, None)]) == {"a": NEUTRALS[0],
                                                                      "b": NEUTRALS[1]}
    assert regime_colours([("a", "powerlaw", 1.0)]) == {"a": NEUTRALS[0]}
    axis = shown(plot_headline(results))[0]
    assert {c.lines[0].get_color() for c in bars(axis)} == set(NEUTRALS[:2])


def laddered() -> Results:
    """Three powerlaw regimes at data DID entropy 3, 1, 2 and pi_ref's step-0 evals (0.4 and
    0.6 instruction score, 0.5 QA accuracy) in steps.parquet, with steps 0 and 10."""
    trials = pl.DataFrame([
        {"trial_id": f"{r}{s}", "regime": r, "beta": 0.1, "seed": s, "status": "TERMINATED",
         "regime_kind": "powerlaw", "data_did_entropy": level, "did_entropy": level + s,
         "instruction_score": 0.1 * level, "qa_accuracy": 0.2 * level}
        for r, level in (("c", 3.0), ("a", 1.0), ("b", 2.0)) for s in (0, 1)])
    steps = pl.DataFrame([
        {"trial_id": t["trial_id"], "regime": t["regime"], "beta": 0.1, "seed": t["seed"],
         "step": step, "loss": 0.7 - step / 100, "rewards/accuracies": 0.0 if step == 0 else 0.8,
         "eval/instruction_score": (0.4 + 0.2 * t["seed"]) if step == 0 else 0.7,
         "eval/qa_accuracy": 0.5 if step == 0 else 0.9}
        for t in trials.iter_rows(named=True) for step in (0, 10)])
    return Results.of(trials, steps, sweep="s")


def test_scatter_colours_follow_the_data_entropy_and_mark_pi_ref():
    """Points are coloured dark to light in data DID entropy order; each headline panel has a
    dashed line at the step-0 mean of its eval metric, named in the legend."""
    figure = plot_headline(laddered())
    instruction, qa = shown(figure)
    colour = {c.lines[0].get_xdata()[0]: c.lines[0].get_color() for c in bars(instruction)}
    assert luminance(colour[1.5]) < luminance(colour[2.5]) < luminance(colour[3.5])
    for axis, value in ((instruction, 0.5), (qa, 0.5)):
        (line,) = [ln for ln in axis.get_lines() if ln.get_linestyle() == "--"]
        assert list(line.get_ydata()) == pytest.approx([value, value])
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert texts == ["a", "b", "c", "β = 0.1", "π_ref"]
    assert figure.legends[0].legend_handles[-1].get_linestyle() == "--"


def test_no_pi_ref_line_without_step_zero(results):
    """conftest's steps start at 1: nothing is known about pi_ref, no line, no entry."""
    figure = plot_headline(results)
    assert not any(ln.get_linestyle() == "--" for a in figure.axes for ln in a.get_lines())
    assert "π_ref" not in [t.get_text() for t in figure.legends[0].get_texts()]


def test_reward_accuracy_curve_starts_after_step_zero():
    """At pi_ref every reward is 0: the accuracy there is undefined, not a point at 0."""
    figure = plot_dynamics(laddered())
    (accuracy,) = [a for a in shown(figure) if a.get_ylabel() == "reward accuracy"]
    assert all(list(line.get_xdata()) == [10] for line in accuracy.get_lines())
    assert "step 0:\nundefined" in [t.get_text() for t in accuracy.texts]
    (loss,) = [a for a in shown(figure) if a.get_ylabel() == "DPO loss (nats)"]
    assert all(list(line.get_xdata()) == [0, 10] for line in loss.get_lines())


def test_dynamics_has_a_column_per_beta_and_a_line_per_regime(results):
    """Two betas: each metric a row of two panels titled by beta, one solid line per regime
    that reported it (pl has no beta 0.5 trial)."""
    axes = shown(plot_dynamics(results))
    assert [a.get_title() for a in axes] == ["β = 0.1", "β = 0.5", "", ""]
    assert [len(a.get_lines()) for a in axes] == [2, 1, 2, 1]
    assert {ln.get_linestyle() for a in axes for ln in a.get_lines()} == {"-"}


def test_points_are_seed_means_with_sd_error_bars(results):
    """pg at beta 0.1: DID entropy 1, 2, 3 over seeds: a point at 2 with an x bar 1 to 3."""
    axis = shown(plot_headline(results))[0]
    bars = [c for c in axis.containers if isinstance(c, ErrorbarContainer)]
    (point,) = [c for c in bars if c.lines[0].get_xdata()[0] == 2.0]
    xbar = point.lines[2][0].get_segments()[0]
    assert [xbar[0][0], xbar[1][0]] == [1.0, 3.0]
    assert len(bars) == 3  # pg and pl at beta 0.1, pg at 0.5 (its one finished seed)


def test_panels_only_for_reported_values(results):
    """The hand-built sweep reports three of the correlated scores and two curves: no empty
    panels; the legend takes the slot after the last score."""
    scores = plot_entropy_vs_scores(results)
    assert [a.get_ylabel() for a in shown(scores)] == [
        "instruction score", "QA accuracy", "chosen log π/π_ref (nats)"]
    assert sum(a.get_legend() is not None for a in scores.axes) == 1
    curves = plot_dynamics(results)  # a row per metric, a column per beta
    assert [a.get_ylabel() for a in shown(curves)] == ["DPO loss (nats)", "", "DID entropy (nats)",
                                                       ""]


def test_curves_start_at_pi_ref(ci_sweep):
    """A real sweep's curves begin at step 0, pi_ref's values: the sigmoid loss log 2 and the
    DID entropy of a uniform DID over the toy world's 819 responses; reward accuracy, undefined
    there, begins after it. The headline's pi_ref line is the step-0 eval score."""
    results = load(ci_sweep[1])
    curves = plot_dynamics(results)
    starts = {"DPO loss (nats)": math.log(2), "DID entropy (nats)": math.log(819)}
    axes = shown(curves)  # rows of two: one panel per beta
    for row in range(0, len(axes), 2):
        label = axes[row].get_ylabel()
        for axis in axes[row:row + 2]:
            lines = axis.get_lines()
            assert len(lines) == 2, label  # 2 regimes in each beta's panel
            if label in starts:
                for line in lines:
                    assert line.get_xdata()[0] == 0
                    assert line.get_ydata()[0] == pytest.approx(starts[label], abs=1e-5)
            if label == "reward accuracy":
                assert all(line.get_xdata()[0] > 0 for line in lines)
    pi_ref = (results.steps.filter(pl.col("step") == 0)
              .select(pl.col("eval/instruction_score").mean()).collect().item())
    dashed = [ln for ln in shown(plot_headline(results))[0].get_lines()
              if ln.get_linestyle() == "--"]
    assert [ln.get_ydata()[0] for ln in dashed] == [pytest.approx(pi_ref)]


def test_figures_of_a_sweep_with_nothing_finished(tmp_path):
    results = Results.of(pl.DataFrame({"trial_id": ["a"], "regime": ["pg"], "beta": [0.1],
                                       "status": ["RUNNING"]}))
    figure = plot_headline(results)
    assert all("no finished trial yet" in [t.get_text() for t in a.texts] for a in shown(figure))
    for path in write_plots(results, tmp_path):
        assert_image(path)


def test_save_writes_the_formats_asked(results, tmp_path):
    paths = save(plot_headline(results), tmp_path / "sub" / "fig", formats=("pdf",))
    assert paths == [tmp_path / "sub" / "fig.pdf"]
    assert_image(paths[0])


SCORES = ["instruction_score", "qa_accuracy", "qa_expected"]


def verdicts_of(units: list, stratum_units: list, low: list, high: list) -> list:
    table = pl.DataFrame({
        "sweep": ["s"] * 3, "did_entropy_estimator": ["exact"] * 3, "score": SCORES,
        "entropy": ["did_entropy"] * 3, "n": [18] * 3, "units": units,
        "stratum_units": stratum_units,
        "spearman": [0.5] * 3, "spearman_ci_low": low, "spearman_ci_high": high})
    return verdicts(table)["verdict"].to_list()


def test_verdicts_read_the_interval_against_the_predicted_sign():
    """Signs predicted: +, -, -. With enough units: above 0 supports +, below 0 supports -,
    an interval across 0 or none says nothing; below 0 contradicts +."""
    assert verdicts_of([6] * 3, [6] * 3, [0.1, -0.9, None], [0.9, -0.2, None]) == [
        "supported", "supported", "inconclusive"]
    assert verdicts_of([6] * 3, [6] * 3, [-0.9, -0.9, 0.1], [-0.2, 0.3, 0.9]) == [
        "contradicted", "inconclusive", "contradicted"]


def test_verdicts_need_six_units_and_three_per_beta():
    """The same intervals that would support or contradict say nothing with 5 units, 2 in a
    beta, or no count."""
    assert verdicts_of([5, 6, None], [5, 2, None], [0.1, -0.9, -0.9], [0.9, -0.2, -0.2]) == [
        "inconclusive", "inconclusive", "inconclusive"]


def test_the_win_rate_is_no_verdict_row():
    """instruction_winrate is derived from the judge score (docs/design.md §6.1): a
    correlation of it, however clear, adds no claim row."""
    scores = [*SCORES, "instruction_winrate"]
    table = verdicts(pl.DataFrame({
        "sweep": ["s"] * 4, "did_entropy_estimator": ["exact"] * 4, "score": scores,
        "entropy": ["did_entropy"] * 4, "n": [18] * 4, "units": [6] * 4,
        "stratum_units": [3] * 4, "spearman": [-0.5] * 4,
        "spearman_ci_low": [-0.9] * 4, "spearman_ci_high": [-0.2] * 4}))
    assert table["score"].to_list() == SCORES


def grid_results(regimes: int, betas: list[float], seeds: int) -> Results:
    """Finished trials whose scores follow DID entropy exactly, as the claims predict:
    instruction score rises with it, QA accuracy falls."""
    rows = [{"trial_id": f"r{r}b{b}s{s}", "regime": f"r{r}", "beta": b, "seed": s,
             "status": "TERMINATED", "did_entropy": r + b + s / 10,
             "instruction_score": r + b + s / 10, "qa_accuracy": -(r + b + s / 10)}
            for r in range(regimes) for b in betas for s in range(seeds)]
    return Results.of(pl.DataFrame(rows), sweep="s")


def test_the_ci_sweep_shape_is_inconclusive_and_says_why(capsys):
    """sweeps/ci.yaml with one seed: 2 regimes x 2 betas. A perfect rank order from two
    datasets is no evidence: inconclusive, with its 2 units printed (it used to read
    supported and contradicted, from an interval of [1, 1])."""
    table = verdicts(correlations(grid_results(2, [0.1, 0.5], 1)))
    scored = table.filter(pl.col("score").is_in(["instruction_score", "qa_accuracy"]))
    assert scored.select("n", "units", "stratum_units", "spearman", "verdict").rows() == [
        (4, 2, 2, 1.0, "inconclusive"), (4, 2, 2, -1.0, "inconclusive")]
    print_tables(grid_results(2, [0.1, 0.5], 1))
    verdict_table = capsys.readouterr().out.split("The paper's claims")[1]
    assert "units" in verdict_table and "stratum_units" in verdict_table


def test_many_datasets_in_rank_order_support_the_claims():
    table = verdicts(correlations(grid_results(8, [0.5, 1.0, 2.0], 2)))
    scored = table.filter(pl.col("score").is_in(["instruction_score", "qa_accuracy"]))
    assert scored.select("n", "units", "stratum_units", "verdict").rows() == [
        (48, 8, 8, "supported"), (48, 8, 8, "supported")]


def test_capability_report_embeds_its_figures(results, tmp_path):
    report = capability_report(results, tmp_path / "report", "partial")
    text = report.read_text()
    assert text.startswith("# DID entropy vs capability: partial")
    assert "8 (6 finished, 1 failed, 0 stopped early, 1 running)" in text
    for name in ("headline.png", "headline-page.png", "entropy_vs_scores.png", "dynamics.png"):
        assert f"]({name})" in text
        assert_image(report.parent / name)
    assert ".pdf)" not in text


@pytest.mark.parametrize("fmt", ["table", "md", "csv"])
def test_print_summary_prints_both_tables(sweep_dir, fmt, capsys):
    from didray.analysis import print_summary

    table = print_summary(sweep_dir, fmt)
    out = capsys.readouterr().out
    assert table.height == 3 and int(table["failed"].sum()) == 1
    assert "DID entropy vs downstream scores" in out and "Correlation of DID entropy" in out
    assert "instruction_score" in out


def test_readable_shows_the_estimator_only_when_there_are_several():
    one = pl.DataFrame({"sweep": ["a", "b"], "did_entropy_estimator": ["exact", "exact"],
                        "did_entropy": [1.0, 2.0]})
    assert readable(one, "table").columns == ["sweep", "did_entropy"]
    two = one.with_columns(did_entropy_estimator=pl.Series(["exact", "snis_ref_k8"]))
    assert readable(two, "md").columns == ["sweep", "did_entropy_estimator", "did_entropy"]
    assert readable(one, "csv").columns == one.columns


def test_the_verdict_row_names_its_weight_and_the_verdict_at_every_weight():
    """judge_frame (support/judged.py) read at w = 0.45: contradicted there and at every w up
    to it, supported from 0.5 on; the verdict row says so, the QA rows name no weight."""
    results = Results.of(judge_frame(0.45), sweep="s")
    weights = judge_weights(results)
    assert weights["verdict"].to_list() == ["contradicted"] * 6 + ["supported"] * 6
    table = verdicts(correlations(results), weights)
    assert table.select("score", "verdict", "judge_weight", "verdict_by_weight").rows() == [
        ("instruction_score", "contradicted", 0.45,
         "contradicted at w 0 to 0.45; supported at w 0.5 to 1"),
        ("qa_accuracy", "inconclusive", None, None), ("qa_expected", "inconclusive", None, None)]


def test_print_tables_shows_the_weights_only_where_trials_have_the_parts(results, capsys):
    print_tables(Results.of(judge_frame(0.5), sweep="s"))
    out = capsys.readouterr().out
    assert "The instruction claim at every judge weight" in out and "preregistered" in out
    print_tables(results)  # conftest's trials, as an hf sweep's: no judge parts
    assert "every judge weight" not in capsys.readouterr().out


def test_judge_weight_figure_marks_the_weight_and_the_sign_change(tmp_path):
    """The curve is the table's Spearman at each w; the pre-registered w = 0.5 is a dotted
    line, and the sign change, -1 at 0.4 to +1 at 0.5, is placed halfway, at 0.45."""
    results = Results.of(judge_frame(0.5), sweep="s")
    figure = plot_judge_weights(weight_correlations(results))
    (axis,) = figure.axes
    curve = axis.get_lines()[0]
    assert list(curve.get_xdata()) == pytest.approx([i / 10 for i in range(11)])
    assert list(curve.get_ydata()) == pytest.approx([-1.0] * 5 + [1.0] * 6)
    texts = [t.get_text() for t in axis.texts]
    assert texts == ["pre-registered w = 0.5", "ρ = 0 near w = 0.45"]
    assert axis.get_xlabel() == "judge weight w"
    paths = write_plots(results, tmp_path)
    assert [p.name for p in paths][-2:] == ["judge_weights.png", "judge_weights.pdf"]
    assert_image(tmp_path / "judge_weights.png")
