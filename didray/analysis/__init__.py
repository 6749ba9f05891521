"""Polars analysis of sweep results: `load` the Parquet tables of one or more results
directories, then build tables (one lazy query, one collect each) and figures from them."""

from didray.analysis.load import Results, load
from didray.analysis.policy import load_policy
from didray.analysis.report import capability_report, print_summary, print_tables
from didray.analysis.tables import (
    compare,
    correlations,
    dynamics,
    entropy_vs_scores,
    optimum,
)

__all__ = ["Results", "capability_report", "compare", "correlations", "dynamics",
           "entropy_vs_scores", "load", "load_policy", "optimum", "print_summary", "print_tables"]
