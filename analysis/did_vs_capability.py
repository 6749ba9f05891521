"""Reproduce the paper's "DID entropy vs capability" comparison on one or more sweeps.

arXiv:2505.23761 reports that high-entropy DID helps open-ended instruction following and
low-entropy DID helps knowledge-intensive QA. This writes REPORT_DIR/report.md: the verdict on
each claim (Spearman correlation of DID entropy with the score across finished trials, 95%
bootstrap interval), regime x beta tables and the figures, embedded.

    .venv/bin/python analysis/did_vs_capability.py results/toy --out reports/toy
"""

from __future__ import annotations

import argparse
from pathlib import Path

from didray.analysis import capability_report, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="results directories (<storage>/<sweep name>/)")
    parser.add_argument("--out", type=Path, required=True, help="report directory")
    args = parser.parse_args()
    title = ", ".join(path.resolve().name for path in args.sweeps)
    print(capability_report(load(args.sweeps), args.out, title))


if __name__ == "__main__":
    main()
