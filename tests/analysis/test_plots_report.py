"""Figures and the markdown capability report: what each figure shows, and every file written
as a valid PNG or PDF."""

import math

import polars as pl
import pytest
from matplotlib.container import ErrorbarContainer
from support.judged import judge_frame

from didray.analysis import correlations, load
from didray.analysis.load import Results
from didray.analysis.plots import (
    number,
    plot_dynamics,
    plot_entropy_vs_scores,
    plot_headline,
    plot_judge_weights,
    save,
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
    figure = plot_headline(results, "page")
    assert len(figure.legends) == 1 and not any(a.get_legend() for a in figure.axes)
    legend = figure.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["pg", "pl", "β = 0.1", "β = 0.5"]


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
    curves = plot_dynamics(results)
    assert [a.get_ylabel() for a in shown(curves)] == ["DPO loss (nats)", "DID entropy (nats)"]


def test_curves_start_at_pi_ref(ci_sweep):
    """A real sweep's curves begin at step 0, pi_ref's values: the sigmoid loss log 2 and the
    DID entropy of a uniform DID over the toy world's 819 responses."""
    curves = plot_dynamics(load(ci_sweep[1]))
    starts = {"DPO loss (nats)": math.log(2), "DID entropy (nats)": math.log(819)}
    for axis in shown(curves):
        if axis.get_ylabel() in starts:
            lines = axis.get_lines()
            assert len(lines) == 4, axis.get_ylabel()  # 2 regimes x 2 betas
            for line in lines:
                assert line.get_xdata()[0] == 0
                assert line.get_ydata()[0] == pytest.approx(starts[axis.get_ylabel()], abs=1e-5)


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
