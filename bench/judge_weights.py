"""How much of the instruction verdict the judge weight decides (docs/design.md §3.6).

The exact optimum family pi ∝ pi_ref exp(open_score / tau) of the experiment's world
(sweeps/did-claims.yaml: seed 0, 8 + 8 prompts), evaluated as a trained policy is, one tau a
unit at one beta (every prompt tilted alike, held-out ones included: transfer assumed
perfect), read by `didray analyze`'s judge-weight table: the Spearman of DID entropy and the
instruction score at every w, with its interval and verdict, and the figure. Asserts nothing;
about 15 s on one core (pi_ref's fit included).

    .venv/bin/python bench/judge_weights.py [--out DIR] [--cache DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl
import torch

from didray.analysis.load import Results
from didray.analysis.plots import plot_judge_weights, save
from didray.analysis.report import judge_weights
from didray.analysis.tables import weight_correlations
from didray.config.schema import Judge
from didray.eval.toy import evaluate_tables, prompt_tables
from didray.worlds import toy

SPEC = toy.ToyWorldSpec(seed=0, n_open_prompts=8, n_fact_prompts=8, max_response_tokens=3,
                        sft_steps=600)
TAUS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
COLUMNS = ("did_entropy", "instruction_score", "instruction_judge", "instruction_coverage")


def family(cache: Path) -> pl.DataFrame:
    """One finished "trial" per tau: the optimum's exact evaluation at the default judge."""
    world, model, tokenizer = toy.load_world(toy.fit_reference(SPEC, cache))
    ref = torch.log_softmax(toy.enumerate_logps(model, tokenizer, world).double(), -1)
    tables, judge = prompt_tables(world), Judge()
    rows = []
    for tau in TAUS:
        out = evaluate_tables(torch.log_softmax(ref + tables.scores / tau, -1), ref, tables,
                              judge)
        rows.append({"trial_id": f"tau{tau:g}", "regime": f"tau{tau:g}", "beta": 1.0,
                     "seed": 0, "status": "TERMINATED", "did_entropy_estimator": "exact",
                     "judge_weight": judge.diversity_weight, **{c: out[c] for c in COLUMNS}})
    return pl.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."),
                        help="where judge_weights.png goes")
    parser.add_argument("--cache", type=Path, help="pi_ref cache (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trials = family(args.cache or Path(scratch))
    results = Results.of(trials, sweep="optimum-family")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=3):
        print(trials)
        print(judge_weights(results))
    print(*save(plot_judge_weights(weight_correlations(results)), args.out / "judge_weights",
                ("png",)))


if __name__ == "__main__":
    main()
