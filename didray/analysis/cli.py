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


def add_analyze_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `analyze` on the `didray` subparsers."""
    analyze = subparsers.add_parser(
        "analyze", help="tables (and figures) of DID entropy against downstream scores")
    analyze.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                         help="results directories (<storage>/<sweep name>/); several are "
                              "analysed together, told apart by directory name")
    analyze.add_argument("--format", choices=FORMATS, default="table",
                         help="print as table, md or csv; parquet writes files to --out")
    analyze.add_argument("--out", type=Path, help="directory for parquet tables and figures")
    analyze.add_argument("--columns", action="store_true",
                         help="print the dictionary of every results column and exit")
    analyze.add_argument("--plot", action="store_true",
                         help="write the figures (headline, entropy_vs_scores, dynamics; PNG "
                              "and PDF) to --out")
    analyze.set_defaults(func=cmd_analyze)


def write_tables(results: Results, out: Path) -> list[Path]:
    """entropy_vs_scores, correlations and dynamics as Parquet files under `out`."""
    from didray.analysis.tables import correlations, dynamics, entropy_vs_scores

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, build in (("entropy_vs_scores", entropy_vs_scores),
                        ("correlations", correlations), ("dynamics", dynamics)):
        path = out / f"{name}.parquet"
        build(results).write_parquet(path)
        paths.append(path)
    return paths


def column_dictionary() -> pl.DataFrame:
    """Every registered results column: where it is written, its type, unit and meaning."""
    return pl.DataFrame(
        [{"column": m.name, "tables": " ".join(m.tables), "dtype": m.dtype, "unit": m.unit,
          "worlds": " ".join(m.worlds), "meaning": m.meaning} for m in REGISTRY.values()])


def cmd_analyze(args: argparse.Namespace) -> int:
    from didray.analysis.load import load
    from didray.analysis.report import print_tables

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
    if args.format == "parquet":
        written += write_tables(results, args.out)
    else:
        print_tables(results, args.format)
    if args.plot:
        from didray.analysis.plots import write_plots

        written += write_plots(results, args.out)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
