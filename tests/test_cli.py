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
