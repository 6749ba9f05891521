"""`didray` command line. Bad input exits with code 2 and a one-paragraph message, no traceback."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Sequence

import polars as pl

from didray.analysis.cli import add_analyze_command
from didray.analysis.policy import add_sample_command
from didray.display import print_frame
from didray.errors import BadInput, NoRoom, no_room
from didray.jobs_cli import add_job_commands, add_overrides
from didray.storage import redact


class UsageError(BadInput):
    """A bad command-line argument."""

    def report(self) -> str:
        return str(self)


class Parser(argparse.ArgumentParser):
    """argparse prints usage plus the error; researchers asked for the error alone, on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return value


def outcome_count(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (got {text})")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {text})")
    return value


def cmd_theory(args: argparse.Namespace) -> int:
    from didray.theory.report import theory_report

    given = {"instances": args.instances, "steps": args.steps,
             "taus": tuple(args.tau) if args.tau else None}  # None: theory_report's default
    report = theory_report(args.outcomes, args.beta, args.seed,
                           **{key: value for key, value in given.items() if value is not None},
                           progress=lambda line: print(f"didray theory: {line}", file=sys.stderr))
    print_frame(getattr(report, args.show), args.format)
    claims = report.claims.filter(pl.col("kind") == "claim")["status"].value_counts()
    count = dict(zip(claims["status"], claims["count"], strict=True))
    failed = count.get("fails", 0)
    print(f"{count.get('holds', 0)}/{sum(count.values())} claims hold, {failed} fail, "
          f"{count.get('unresolved', 0)} numerically unresolved; "
          f"{report.claims.height - sum(count.values())} rows reported, not claims",
          file=sys.stderr)
    return 0 if failed == 0 else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from didray.examples import load
    from didray.preflight import trackers_ready
    from didray.storage import Storage

    _, sweep = load(args.file, args.overrides)  # a path, or a shipped example's name
    storage = Storage.of(sweep.storage)
    storage.check()  # a URI it cannot open is refused here, not mid-sweep
    storage.check_writable(storage.local / sweep.name)  # as `run` does before Ray starts
    trackers_ready(sweep)  # a tracker that would fail after prepare is refused here
    given = f" with {' '.join(args.overrides)}" if args.overrides else ""
    print(f"{args.file}{given}: valid sweep {sweep.name!r}: {sweep.trial_count()} trial(s) "
          f"({sweep.search.mode}: {' x '.join(['beta', 'regime', 'seed', *sweep.search.axes])})")
    return 0


def storage_option(where: str) -> str:
    from didray.storage import check_location

    try:
        return check_location(where)
    except ValueError as err:
        raise BadInput(f"--storage {err}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from didray.analysis import print_summary
    from didray.examples import load
    from didray.sweep.driver import continue_command, run_sweep

    file, sweep = load(args.file, args.overrides)  # a path, or a shipped example's name
    if args.storage:
        sweep = sweep.model_copy(update={"storage": storage_option(args.storage)})
    again = continue_command(args.file, args.overrides, args.storage, args.address)
    try:
        sweep_dir = run_sweep(sweep, file.read_text(), args.address, args.resume,
                              args.overrides, args.extend, args.verbose)
    except KeyboardInterrupt:
        print(f"didray: interrupted; what was written is kept, continue with `{again}`",
              file=sys.stderr)
        return 130
    except Exception as err:
        # A full disk reaches here from any writer, often wrapped (Ray, Tune, pyarrow).
        if (found := no_room(err)) is None:
            raise
        raise NoRoom(*found, sweep.storage, again) from None
    print(f"\nResults: {sweep_dir}")
    table = print_summary(sweep_dir, args.format)
    # A trial the scheduler stopped early (ASHA) has ended as intended: not unfinished.
    ended = table.select("finished", "failed", "stopped").sum().sum_horizontal().item()
    unfinished = sweep.trial_count() - int(ended)
    if unfinished:
        print(f"didray: {unfinished} trial(s) did not finish; continue with `{again}`",
              file=sys.stderr)
        return 130
    return 0 if table["failed"].sum() == 0 else 1


SWEEP_FILE_HELP = "a sweep file, or a shipped example sweep by name (toy, did-claims, ...)"


def build_parser() -> Parser:
    parser = Parser(prog="didray", description=__doc__)
    parser.add_argument("--version", action="version",
                        version=f"didray {importlib.metadata.version('didray')}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    theory = sub.add_parser("theory", help="check the paper's claims in the exact tabular world")
    theory.add_argument("--outcomes", type=outcome_count, default=50, help="N outcomes (>= 2)")
    theory.add_argument("--beta", type=positive_float, default=0.5, help="DPO beta (> 0)")
    theory.add_argument("--tau", type=positive_float, nargs="+",
                        help="pi_star = pi_ref * exp(score / tau): the DID-entropy knob; one or "
                             "more values (default: a grid from ~2 nats to ~log N)")
    theory.add_argument("--seed", type=int, default=0)
    theory.add_argument("--instances", type=positive_int,
                        help="random draws of pi_ref and score, each tilted at every tau")
    theory.add_argument("--steps", type=positive_int,
                        help="gradient steps of the finite-step dynamics")
    theory.add_argument("--show", choices=("claims", "fits", "dynamics"), default="claims",
                        help="claims: one row per claim; fits: convergence of every fit; "
                             "dynamics: every step of every run")
    theory.add_argument("--format", choices=("table", "md", "csv"), default="table")
    theory.set_defaults(func=cmd_theory)

    validate = sub.add_parser("validate", help="check a sweep file; exit 2 listing every error")
    validate.add_argument("file", help=SWEEP_FILE_HELP)
    add_overrides(validate)
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="run a sweep on Ray (embedded local Ray by default)")
    run.add_argument("file", help=SWEEP_FILE_HELP)
    add_overrides(run)
    run.add_argument("--address", help="Ray cluster to join, e.g. ray://HEAD:10001 or auto")
    continued = run.add_mutually_exclusive_group()
    continued.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    continued.add_argument("--extend", action="store_true",
                       help="run the new search values of a finished sweep (the file may "
                            "differ from the recorded one only by added search values)")
    run.add_argument("--storage", help="override the sweep file's storage (a path or a URI)")
    run.add_argument("--format", choices=("table", "md", "csv"), default="table")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="also print Tune's periodic trial table (status, axes, metrics)")
    run.set_defaults(func=cmd_run)

    add_analyze_command(sub)
    add_sample_command(sub)
    add_job_commands(sub)
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """argparse takes one run of positionals: overrides after an option
    (`didray run FILE --resume train.lr=1e-4`) come back unrecognised and are added here."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and not any(a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(argv)
        return args.func(args)
    except BadInput as err:
        # A message may quote a refused storage URI as typed (an override): never its secret.
        print(redact(err.report()), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`didray analyze X | head -1`): stop quietly, as a shell tool
        # does. Python's recipe: point stdout at devnull, or flushing it at exit raises again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the pipe


if __name__ == "__main__":
    sys.exit(main())
