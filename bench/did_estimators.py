"""Bias, RMSE and interval coverage of the DID-entropy estimators, graded exactly.

The toy world's pi_ref is enumerated; policies pi = pi_ref * exp(score / tau) at a sharp and
a flat tau give a low- and a high-entropy DID whose exact entropy is known. Each estimator
runs on fresh samples `--reps` times per K (8, 32, 128). Coverage is the fraction of
(rep, prompt) cells whose exact entropy lies inside the interval: `spread` is the evaluation's
percentile bootstrap, `delta` the SNIS delta-method interval (docs/design.md §1.8), drawn
on its own samples. Prints a table; asserts nothing.

    .venv/bin/python bench/did_estimators.py [--reps 20] [--cache results/cache/toy]
"""

from __future__ import annotations

import argparse

import polars as pl
import torch
from transformers.utils import logging as hf_logging

from didray.core.did import did_entropy
from didray.core.estimators import snis_delta_interval
from didray.eval.estimates import entropy_estimates
from didray.eval.toy import prompt_tables
from didray.worlds import toy

KS = (8, 32, 128)


def policies(cache: str) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    spec = toy.ToyWorldSpec(n_open_prompts=12, n_fact_prompts=12)
    world, model, tokenizer = toy.load_world(toy.fit_reference(spec, cache))
    ref = toy.enumerate_logps(model, tokenizer, world).double()  # (P, R)
    ref = torch.log_softmax(ref, dim=-1)  # renormalise away float32 rounding
    scores = prompt_tables(world).scores  # (P, R)
    return ref, {tau: torch.log_softmax(ref + scores / tau, dim=-1) for tau in (0.05, 1.0)}


def delta_coverage(logp: torch.Tensor, ref: torch.Tensor, k: int, seed: int) -> list[dict]:
    """Per SNIS proposal, whether each prompt's delta-method interval holds the exact value."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    exact = did_entropy(logp, ref)  # (P,)
    rows = []
    for proposal, source in (("policy", logp), ("ref", ref)):
        ids = torch.multinomial(source.exp(), k, replacement=True, generator=generator)  # (P, K)
        log_ratio = logp.gather(-1, ids) - ref.gather(-1, ids)  # (P, K)
        low, high = snis_delta_interval(log_ratio, source.gather(-1, ids))  # (P,), (P,)
        inside = ((low <= exact) & (exact <= high)).tolist()
        rows += [{"estimator": "snis", "proposal": proposal, "k": k, "delta": c} for c in inside]
    return rows


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--reps", type=int, default=20, help="repetitions per (tau, K)")
    args.add_argument("--cache", default="results/cache/toy", help="toy reference cache")
    opts = args.parse_args()
    hf_logging.disable_progress_bar()
    ref, tilted = policies(opts.cache)
    rows, delta = [], []
    for tau, logp in tilted.items():
        for k in KS:
            for rep in range(opts.reps):
                rows += [{**r, "tau": tau} for r in entropy_estimates(logp, ref, k, 100, rep)]
                delta += [{**r, "tau": tau} for r in delta_coverage(logp, ref, k, rep)]
    print(f"toy world: {ref.shape[0]} prompts x {ref.shape[1]} responses, {opts.reps} reps")
    print(table(pl.DataFrame(rows), pl.DataFrame(delta)))


def table(rows: pl.DataFrame, delta: pl.DataFrame) -> str:
    """Bias, RMSE and both coverages per (tau, estimator, proposal, K)."""
    key = ("tau", "estimator", "proposal", "k")
    err = pl.col("estimate") - pl.col("exact")
    graded = (rows.group_by(*key)
              .agg(pl.col("exact").mean().alias("exact H"), err.mean().alias("bias"),
                   (err**2).mean().sqrt().alias("rmse"),
                   pl.col("exact").is_between("spread_low", "spread_high").mean()
                   .alias("spread cov"))
              .join(delta.group_by(*key).agg(pl.col("delta").mean().alias("delta cov")),
                    on=key, how="left")
              .sort(*key))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=3,
                   tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):
        return str(graded)


if __name__ == "__main__":
    main()
