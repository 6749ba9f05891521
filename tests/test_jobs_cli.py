"""`didray submit|status|logs|stop` without a cluster: bad input and unreachable addresses
exit 2 with one paragraph. tests/test_jobs.py runs the commands against a real head node."""

from __future__ import annotations

import pytest
from support.fixtures import free_port
from support.sweeps import ROOT

from didray.cli import Parser, main
from didray.errors import BadInput
from didray.jobs_cli import add_job_commands

CI_SWEEP = ROOT / "sweeps" / "ci.yaml"


def parse(*argv: str):
    parser = Parser(prog="didray")
    add_job_commands(parser.add_subparsers(dest="command", required=True, parser_class=Parser))
    return parser.parse_args(argv)


@pytest.fixture
def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there once the socket is closed


@pytest.mark.parametrize("argv", [
    ("status",), ("status", "some-job"), ("logs", "some-job"), ("logs", "some-job", "--follow"),
    ("stop", "some-job"), ("submit", str(CI_SWEEP), "--working-dir", str(ROOT))])
def test_unreachable_address_is_bad_input(argv, closed_address):
    args = parse(*argv, "--address", closed_address)
    with pytest.raises(BadInput) as err:
        args.func(args)
    report = err.value.report()
    assert f"http://{closed_address}" in report and "cannot reach the Ray dashboard" in report
    assert "\n" not in report  # one paragraph


def test_cli_exits_2_without_traceback(closed_address, capsys):
    assert main(["status", "--address", closed_address]) == 2
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err


@pytest.mark.parametrize(("steps", "working_dir", "needle"), [
    ("-1", None, "train.steps"), ("6", ROOT, "outside the working directory")])
def test_submit_reports_bad_input_before_connecting(steps, working_dir, needle, tmp_path,
                                                     closed_address, capsys):
    # The address is closed: had submit connected first, the error would be "cannot reach".
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(CI_SWEEP.read_text().replace("steps: 6", f"steps: {steps}"))
    argv = ["submit", str(sweep), "--address", closed_address,
            "--working-dir", str(working_dir or tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "cannot reach" not in err


def test_address_defaults_to_ray_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "http://from-env:8265")
    assert parse("status").address == "http://from-env:8265"
