"""The command line: exit codes and one-line errors for bad arguments."""

import pytest

from didray.cli import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["theory", "--beta", "-1"], "--beta: must be > 0 (got -1)"),
        (["theory", "--outcomes", "1"], "--outcomes: must be >= 2 (got 1)"),
        (["theory", "--format", "xml"], "invalid choice"),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_theory_prints_csv_with_every_claim(capsys):
    assert main(["theory", "--outcomes", "8", "--instances", "1", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "claim,condition,metric,value,expected,holds"
    assert len(out) == 29  # header + 28 claims
    assert all(line.endswith("true") for line in out[1:])
