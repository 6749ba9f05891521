"""Figures and the markdown capability report: every file written and non-empty."""

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from didray.analysis.load import Results
from didray.analysis.plots import write_plots
from didray.analysis.report import capability_report, readable, verdicts

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG


def test_every_figure_is_written(results, tmp_path):
    paths = write_plots(results, tmp_path / "figures")
    assert [p.name for p in paths] == ["entropy_vs_scores.png", "dynamics.png"]
    for path in paths:
        assert_png(path)


def test_figures_of_a_sweep_with_nothing_finished(tmp_path):
    results = Results.of(pl.DataFrame({"trial_id": ["a"], "regime": ["pg"], "beta": [0.1],
                                       "status": ["RUNNING"]}))
    for path in write_plots(results, tmp_path):
        assert_png(path)


def test_verdicts_read_the_interval_against_the_predicted_sign():
    table = pl.DataFrame({
        "sweep": ["s"] * 4, "did_entropy_estimator": ["exact"] * 4,
        "score": ["instruction_score", "instruction_winrate", "qa_accuracy", "qa_expected"],
        "n": [9, 9, 9, 2], "spearman": [0.5, -0.7, -0.8, -1.0],
        "spearman_ci_low": [0.1, -0.9, -0.9, None], "spearman_ci_high": [0.9, -0.2, 0.3, None]})
    got = verdicts(table).select("score", "verdict")
    assert_frame_equal(got, pl.DataFrame({
        "score": ["instruction_score", "instruction_winrate", "qa_accuracy", "qa_expected"],
        "verdict": ["supported", "contradicted", "inconclusive", "inconclusive"]}))


def test_capability_report_embeds_its_figures(results, tmp_path):
    report = capability_report(results, tmp_path / "report", "partial")
    text = report.read_text()
    assert text.startswith("# DID entropy vs capability: partial")
    assert "8 (6 finished, 1 failed, 1 running)" in text
    for name in ("entropy_vs_scores.png", "dynamics.png"):
        assert f"]({name})" in text
        assert_png(report.parent / name)


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
