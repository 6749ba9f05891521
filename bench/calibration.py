"""Does population DPO land on each cell's known optimum? (docs/design.md §1.11)

A powerlaw grid (data DID entropy levels x training betas) trained with `train.objective:
population` through the real sweep code (data -> train -> eval), each cell's learned DID
entropy against the closed form H(softmax(beta_data s / (tau beta))) computed here from the
world's scores alone, so a swapped argument, a flipped tilt or a wrong beta on the way shows.
Prints one row per cell (closed form, the optimum column, learned, gap, TV to the optimum)
and whether the learned entropy rises with the level at every beta. Asserts nothing: the
calibration is not yet within its target (issue "A sweep whose answer can be trusted").

    .venv/bin/python bench/calibration.py [--levels 6.3 6.4 6.5] [--betas 0.8 1 1.25]
                                          [--steps 200] [--lr 0.01] [--storage DIR]

A storage holding the CI world's cache (pi_ref, enumeration) skips their fit.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl
import ray
import yaml

from didray.config.load import parse_sweep
from didray.config.schema import ToyWorldSpec
from didray.core.did import tilt_entropy
from didray.eval.toy import prompt_tables
from didray.sweep.driver import run_sweep
from didray.worlds import toy

ROOT = Path(__file__).parents[1]
CI = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())


def sweep_of(levels: list[float], betas: list[float], steps: int, lr: float, storage: Path):
    return parse_sweep({
        **CI, "name": "calibration", "storage": str(storage),
        "regimes": [{"kind": "powerlaw", "name": f"h{level}", "did_entropy": level,
                     "beta_data": 1.0, "candidates": 16} for level in levels],
        "train": {**CI["train"], "objective": "population", "lr": lr, "steps": steps,
                  "lr_schedule": "cosine", "report_every": steps // 4,
                  "checkpoint_every": steps},
        "eval": {"exact": False},
        "search": {"beta": betas, "seed": [0]}})


def closed_form(tau: float, beta: float) -> float:
    """H(softmax(beta_data s / (tau beta))) over the CI world's training prompts (§1.9)."""
    world = toy.build_world(ToyWorldSpec(**CI["model"]["toy"]))
    scores = prompt_tables(world).scores[: len(world.prompts)]
    return float(tilt_entropy(scores, tau * beta / 1.0).mean())


def cells(results: Path) -> pl.DataFrame:
    trials = pl.read_parquet(results / "trials.parquet")
    closed = [closed_form(t, b) for t, b in zip(trials["tau"], trials["beta"], strict=True)]
    return (trials.with_columns(closed=pl.Series(closed))
            .select("beta", "data_did_entropy", "closed", "optimum_did_entropy",
                    learned="did_entropy", gap=(pl.col("did_entropy") - pl.col("closed")),
                    tv="final/optimum_tv")
            .sort("beta", "data_did_entropy"))


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--levels", type=float, nargs="+", default=[6.3, 6.4, 6.5])
    args.add_argument("--betas", type=float, nargs="+", default=[0.8, 1.0, 1.25])
    args.add_argument("--steps", type=int, default=200)
    args.add_argument("--lr", type=float, default=0.01)
    args.add_argument("--storage", type=Path, default=None)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = sweep_of(opts.levels, opts.betas, opts.steps, opts.lr, opts.storage or Path(tmp))
        try:
            table = cells(run_sweep(sweep, source="bench"))
        finally:
            ray.shutdown()
    rising = table.group_by("beta", maintain_order=True).agg(
        rises=pl.col("learned").is_sorted())
    with pl.Config(tbl_rows=-1, float_precision=3):
        print(table)
        print(rising)
    print(f"within 0.3 nats or TV 0.05: "
          f"{table.filter((pl.col('gap').abs() <= 0.3) | (pl.col('tv') <= 0.05)).height}"
          f"/{table.height} cells")


if __name__ == "__main__":
    main()
