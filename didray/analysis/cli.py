"""`didray analyze PATH [PATH...]`: the tables (and figures) of one or more results directories.

Registered on didray's own subparsers by `add_analyze_command`, so bad input raises BadInput and
the command line prints one line and exits 2 like every other command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from didray.display import print_frame
from didray.errors import BadInput
from didray.metrics import FINAL, PLACEHOLDER, REGISTRY

if TYPE_CHECKING:
    from didray.analysis.load import Results

FORMATS = ("table", "md", "csv", "parquet")
# didray.analysis.tables, but verdicts and judge_weights, whose verdicts are report's
TABLES = ("entropy_vs_scores", "regimes", "optimum", "correlations", "verdicts",
          "judge_weights", "dynamics")


def add_analyze_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `analyze` on the `didray` subparsers."""
    analyze = subparsers.add_parser(
        "analyze", help="tables (and figures) of DID entropy against downstream scores")
    analyze.add_argument("paths", nargs="*", metavar="PATH",
                         help="results directories (<storage>/<sweep name>/, a path or a "
                              "URI); several are analysed together, told apart by name")
    analyze.add_argument("--format", choices=FORMATS, default="table",
                         help="print as table, md or csv; with --out, csv and parquet write "
                              "one file per table")
    analyze.add_argument("--out", type=Path, help="directory for csv or parquet tables and "
                                                  "figures")
    analyze.add_argument("--table", choices=TABLES,
                         help="print this table alone (with --format csv: one readable CSV)")
    analyze.add_argument("--columns", action="store_true",
                         help="print the dictionary of every results column and exit")
    analyze.add_argument("--plot", action="store_true",
                         help="write the figures (headline, entropy_vs_scores, dynamics, "
                              "judge_weights; PNG and PDF) to --out")
    analyze.set_defaults(func=cmd_analyze)


def build_table(results: Results, name: str) -> pl.DataFrame:
    from didray.analysis import report, tables

    verdict_tables = {"verdicts": report.verdict_table, "judge_weights": report.judge_weights}
    return verdict_tables.get(name, getattr(tables, name, None))(results)


def write_tables(results: Results, out: Path, fmt: str = "parquet") -> list[Path]:
    """Every table of TABLES as its own file under `out`: `<name>.parquet` or `<name>.csv`
    (one table per CSV file, so each reads back with pl.read_csv)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in TABLES:
        path = out / f"{name}.{fmt}"
        table = build_table(results, name)
        table.write_parquet(path) if fmt == "parquet" else table.write_csv(path)
        paths.append(path)
    return paths


def column_dictionary() -> pl.DataFrame:
    """Every registered results column: where it is written, its type, unit and meaning."""
    return pl.DataFrame(
        [{"column": m.name, "tables": " ".join(m.tables), "dtype": m.dtype, "unit": m.unit,
          "worlds": " ".join(m.worlds), "meaning": m.meaning} for m in REGISTRY.values()])


def cmd_analyze(args: argparse.Namespace) -> int:
    from didray.analysis.load import load
    from didray.analysis.report import PRECISION, print_tables, readable

    if args.columns:
        print_frame(column_dictionary(), "md" if args.format == "md" else args.format)
        print(f"trials.parquet also holds each numeric step metric of the last report as "
              f"`{FINAL}<name>`; a name with `{PLACEHOLDER}` is one column per K "
              f"(eval.did_samples).", file=sys.stderr)
        return 0
    if not args.paths:
        raise BadInput("analyze: give at least one results directory (<storage>/<sweep>/), "
                       "or --columns for the column dictionary")
    if (args.format == "parquet" or args.plot) and args.out is None:
        raise BadInput("analyze: --format parquet and --plot write files: give --out DIR")
    results = load(args.paths)
    written: list[Path] = []
    if args.format == "parquet" or (args.format == "csv" and args.out is not None):
        written += write_tables(results, args.out, args.format)
    elif args.table:
        print_frame(readable(build_table(results, args.table), args.format), args.format,
                    PRECISION)
    else:
        print_tables(results, args.format)
    if args.plot:
        from didray.analysis.plots import write_plots

        written += write_plots(results, args.out)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
