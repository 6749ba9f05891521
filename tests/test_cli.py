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


@pytest.mark.parametrize("how", ["env", "flag"])
def test_an_http_ray_address_is_explained_and_nothing_is_written(how, tmp_path, monkeypatch,
                                                                  capsys):
    """The cluster README exports the Jobs API's http address; `didray run` must say what to
    use instead (exit 2), before starting Ray or writing anything."""
    import ray

    address = "http://127.0.0.1:8265"
    argv = ["run", "sweeps/ci.yaml", "--storage", str(tmp_path / "out")]
    if how == "env":
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        argv += ["--address", address]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Jobs API address" in err and "--address auto" in err and address in err
    assert not (tmp_path / "out").exists()
    assert not ray.is_initialized()


def test_wide_tables_repeat_their_row_keys_in_every_block():
    import polars as pl

    from didray.display import column_blocks

    frame = pl.DataFrame({"regime": ["pg"], "tau": [0.1], "beta": [0.5], "aaaaaaaaaa": [1.0],
                          "bbbbbbbbbb": [2.0], "cccccccccc": [3.0]})
    # widths: regime 9, tau 7, beta 7, each long column 13; a run may hold 40 characters.
    assert column_blocks(frame, 40) == [["regime", "tau", "beta", "aaaaaaaaaa"],
                                        ["regime", "beta", "bbbbbbbbbb"],
                                        ["regime", "beta", "cccccccccc"]]


def test_numbers_keep_two_significant_digits():
    """A small value prints with significant digits where three decimals would drop them
    (a searched learning rate printed as 0.000 before); the rest as three decimals."""
    import polars as pl

    from didray.display import number, readable_numbers

    assert [number(v, 3) for v in (0.0003, 0.009, 0.0123, 0.5, 0.0, -2.0, 1234.5)] == [
        "0.0003", "0.009", "0.012", "0.500", "0.000", "-2.000", "1234.500"]
    frame = readable_numbers(pl.DataFrame({"lr": [0.0003, 0.5], "n": [1, 2]}), 3)
    assert frame["lr"].to_list() == ["0.0003", " 0.500"] and frame["n"].to_list() == [1, 2]
