"""Bias, RMSE and bootstrap-CI coverage of the DID-entropy estimators, graded exactly.

The toy world's pi_ref is enumerated; policies pi = pi_ref * exp(score / tau) at a sharp and
a flat tau give a low- and a high-entropy DID whose exact entropy is known. Each estimator
runs on fresh samples `--reps` times per K. Prints a table; asserts nothing.

    .venv/bin/python bench/did_estimators.py [--reps 20] [--cache results/cache/toy]
"""

from __future__ import annotations

import argparse

import polars as pl
import torch
from transformers.utils import logging as hf_logging

from didray.eval.estimates import entropy_estimates
from didray.eval.toy import prompt_tables
from didray.worlds import toy


def policies(cache: str) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    spec = toy.ToyWorldSpec(n_open_prompts=12, n_fact_prompts=12)
    world, model, tokenizer = toy.load_world(toy.fit_reference(spec, cache))
    ref = toy.enumerate_logps(model, tokenizer, world).double()  # (P, R)
    ref = torch.log_softmax(ref, dim=-1)  # renormalise away float32 rounding
    scores = prompt_tables(world).scores  # (P, R)
    return ref, {tau: torch.log_softmax(ref + scores / tau, dim=-1) for tau in (0.05, 1.0)}


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--reps", type=int, default=20)
    args.add_argument("--cache", default="results/cache/toy")
    opts = args.parse_args()
    hf_logging.disable_progress_bar()
    ref, tilted = policies(opts.cache)
    rows = []
    for tau, logp in tilted.items():
        for k in (8, 32, 128):
            for rep in range(opts.reps):
                rows += [{**r, "tau": tau} for r in entropy_estimates(logp, ref, k, 100, rep)]
    err = pl.col("estimate") - pl.col("exact")
    table = (pl.DataFrame(rows)
             .group_by("tau", "estimator", "proposal", "k")
             .agg(pl.col("exact").mean().alias("exact H"), err.mean().alias("bias"),
                  (err**2).mean().sqrt().alias("rmse"),
                  pl.col("exact").is_between("ci_low", "ci_high").mean().alias("ci coverage"))
             .sort("tau", "estimator", "proposal", "k"))
    print(f"toy world: {ref.shape[0]} prompts x {ref.shape[1]} responses, {opts.reps} reps")
    with pl.Config(tbl_rows=-1, float_precision=3, tbl_hide_column_data_types=True,
                   tbl_hide_dataframe_shape=True):
        print(table)


if __name__ == "__main__":
    main()
