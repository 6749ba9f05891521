"""`didray analyze` on a hand-built results directory: formats, files, one-line errors."""

import importlib.metadata
import io
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from didray.cli import main

ROOT = Path(__file__).parents[2]


def analyze(argv: list[str]) -> int:
    return main(["analyze", *argv])


def test_prints_the_tables_as_csv(sweep_dir, capsys):
    assert analyze([str(sweep_dir), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# DID entropy vs downstream scores")
    assert ("sweep,regime,regime_kind,tau,beta_data,beta,trials,finished,failed,stopped,"
            "running") in out
    assert "partial,pg,pg,,,0.5,3,1,1,0,1,exact,4.0" in out  # the failed and running trial, counted


def test_csv_to_out_is_one_file_per_table(sweep_dir, tmp_path):
    out = tmp_path / "out"
    assert analyze([str(sweep_dir), "--format", "csv", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "correlations.csv", "dynamics.csv", "entropy_vs_scores.csv", "judge_weights.csv",
        "optimum.csv", "regimes.csv", "verdicts.csv"]
    table = pl.read_csv(out / "entropy_vs_scores.csv")
    assert table["trials"].sum() == 8  # as the parquet table: every trial counted once


def test_one_table_is_one_readable_csv(sweep_dir, capsys):
    assert analyze([str(sweep_dir), "--format", "csv", "--table", "entropy_vs_scores"]) == 0
    table = pl.read_csv(io.StringIO(capsys.readouterr().out))
    assert table["trials"].sum() == 8
    assert table.columns[:3] == ["sweep", "regime", "regime_kind"]


def test_a_reader_closing_the_pipe_ends_it_quietly(sweep_dir):
    # A real pipe whose reader is gone before didray writes (as `| head -1` is gone before
    # the rest of a long output): `head -c 0` exits without reading, so it is deterministic.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    didray = subprocess.Popen([sys.executable, "-m", "didray", "analyze", str(sweep_dir),
                               "--format", "csv"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    head = subprocess.Popen(["head", "-c", "0"], stdin=didray.stdout)
    didray.stdout.close()  # head held the only other read end: its exit closes the pipe
    head.wait(timeout=30)
    err = didray.stderr.read().decode()
    assert didray.wait(timeout=120) == 141
    assert err == "", err


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"didray {importlib.metadata.version('didray')}"


def test_parquet_and_plots_go_to_out(sweep_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert analyze([str(sweep_dir), "--format", "parquet", "--out", str(out), "--plot"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["correlations.parquet", "dynamics.parquet", "dynamics.pdf", "dynamics.png",
                     "entropy_vs_scores.parquet", "entropy_vs_scores.pdf",
                     "entropy_vs_scores.png", "headline-page.pdf", "headline-page.png",
                     "headline.pdf", "headline.png", "judge_weights.parquet",
                     "optimum.parquet", "regimes.parquet", "verdicts.parquet"]
    assert pl.read_parquet(out / "entropy_vs_scores.parquet")["trials"].sum() == 8
    assert all((out / name).stat().st_size > 0 for name in names)


def test_the_judge_weight_table_and_figure_go_to_out(judge_sweep_dir, tmp_path):
    """support/judged.py's sweep (pre-registered w = 0.5): its verdict at every weight as a
    CSV, contradicted up to w = 0.4 and supported from 0.5, and the figure as PNG and PDF."""
    out = tmp_path / "out"
    assert analyze([str(judge_sweep_dir), "--format", "csv", "--out", str(out), "--plot"]) == 0
    table = pl.read_csv(out / "judge_weights.csv")
    assert table["judge_weight"].to_list() == pytest.approx([i / 10 for i in range(11)])
    assert table["verdict"].to_list() == ["contradicted"] * 5 + ["supported"] * 6
    assert table.filter("preregistered")["judge_weight"].to_list() == [0.5]
    for name in ("judge_weights.png", "judge_weights.pdf"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "needle"),
    [(["{tmp}"], "{tmp}: no results here"),
     (["{sweep}", "--plot"], "--plot write files: give --out DIR"),
     (["{sweep}", "--format", "xml"], "invalid choice"),
     (["{sweep}/steps.parquet"], "steps.parquet: no such results directory")],
)
def test_bad_input_is_one_line_and_exit_2(sweep_dir, tmp_path, argv, needle, capsys):
    fill = {"tmp": tmp_path / "empty", "sweep": sweep_dir}
    (tmp_path / "empty").mkdir()
    assert analyze([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert needle.format(**fill) in err
    assert len(err.strip().splitlines()) == 1


def test_corrupt_trials_file_is_named(sweep_dir, capsys):
    (sweep_dir / "trials.parquet").write_bytes(b"PAR1 garbage")
    assert analyze([str(sweep_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"didray: {sweep_dir / 'trials.parquet'}: not a readable Parquet")
    assert "\n" not in err


def test_capability_script_writes_a_report(sweep_dir, tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(ROOT / "analysis/did_vs_capability.py"),
                           str(sweep_dir), "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(out / "report.md")
    assert "## Verdicts" in (out / "report.md").read_text()


def test_analyze_a_real_ci_sweep(ci_sweep, tmp_path, capsys):
    """sweeps/ci.yaml run on a local Ray (2 betas x 2 regimes), read back end to end."""
    code, results_dir = ci_sweep
    assert code == 0
    capsys.readouterr()
    assert analyze([str(results_dir), "--format", "md"]) == 0
    out = capsys.readouterr().out
    # One sweep: its name column and the all-null CIs (one seed) are left out of markdown.
    assert "| pg " in out and "| instruction_score " in out
    assert "| ci " not in out and "did_entropy_ci_low" not in out
    files = tmp_path / "files"
    assert analyze([str(results_dir), "--format", "parquet", "--out", str(files), "--plot"]) == 0
    table = pl.read_parquet(files / "entropy_vs_scores.parquet")
    assert table.height == 4 and table["finished"].to_list() == [1, 1, 1, 1]
    assert table["did_entropy"].null_count() == 0
    steps = pl.read_parquet(files / "dynamics.parquet")
    assert steps["loss_mean"].null_count() == 0 and steps["step"].max() > 0
    assert (files / "dynamics.png").stat().st_size > 0


def test_tables_fit_the_terminal(sweep_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # shutil.get_terminal_size reads it first
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # capsys's stream, as a terminal
    assert analyze([str(sweep_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert any(len(line) > 90 for line in lines)  # the width is used, not a fixed narrow one


def test_piped_tables_stay_whole(sweep_dir, capsys, monkeypatch):
    """In a pipe, a file or a Ray job log a table is one block however wide: the verdicts'
    header holds its first and last columns on one line."""
    monkeypatch.setenv("COLUMNS", "100")
    assert analyze([str(sweep_dir), "--table", "verdicts"]) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert header.startswith("│ sweep") and header.endswith("┆ verdict      │")
    assert len(header) > 100
