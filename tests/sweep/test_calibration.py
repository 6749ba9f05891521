"""A sweep whose answer is known: a powerlaw grid trained with `train.objective: population`
lands on the closed-form optimum of every cell (docs/design.md §1.11), through the real sweep
code (data -> train -> eval). The closed form is computed here from the world's scores alone,
so a swapped argument, a flipped tilt or a wrong beta anywhere on the way shows."""

from __future__ import annotations

import polars as pl
import pytest
from support.sweeps import CI, run_here, warm, write_sweep

from didray.config.schema import ToyWorldSpec
from didray.core.did import tilt_entropy
from didray.eval.toy import prompt_tables
from didray.worlds import toy

# Data DID entropies (nats) at beta_data 1; log N = 6.71. Lower levels are out of the tiny
# Llama's reach in 200 steps: at level 6.0, beta 0.8 it ended 0.40 nats above the closed form
# 4.96, TV 0.077 (docs/design.md §1.11).
LEVELS = (6.3, 6.4, 6.5)
BETAS = (0.8, 1.0, 1.25)
SWEEP = {**CI, "name": "calibration",
         "regimes": [{"kind": "powerlaw", "name": f"h{level}", "did_entropy": level,
                      "beta_data": 1.0, "candidates": 16} for level in LEVELS],
         "train": {**CI["train"], "objective": "population", "lr": 0.01, "steps": 200,
                   "lr_schedule": "cosine", "report_every": 50, "checkpoint_every": 200},
         "eval": {"exact": False},
         "search": {"beta": list(BETAS), "seed": [0]}}


def closed_form(tau: float, beta: float) -> float:
    """H(softmax(beta_data s / (tau beta))) over the CI world's training prompts (§1.9)."""
    world = toy.build_world(ToyWorldSpec(**CI["model"]["toy"]))
    scores = prompt_tables(world).scores[: len(world.prompts)]
    return float(tilt_entropy(scores, tau * beta / 1.0).mean())


@pytest.fixture(scope="module")
def cells(tmp_path_factory, warm_cache) -> pl.DataFrame:
    storage = warm(tmp_path_factory.mktemp("calibration"), warm_cache)
    path = write_sweep(storage, SWEEP, "calibration.yaml")
    assert run_here(["run", str(path), "--storage", str(storage)]) == 0
    trials = pl.read_parquet(storage / "calibration" / "trials.parquet")
    return trials.with_columns(closed=pl.struct("tau", "beta").map_elements(
        lambda r: closed_form(r["tau"], r["beta"]), return_dtype=pl.Float64))


def test_optimum_columns_are_the_closed_form(cells: pl.DataFrame) -> None:
    assert cells.height == len(LEVELS) * len(BETAS)
    gap = (cells["optimum_did_entropy"] - cells["closed"]).abs().max()
    assert gap < 1e-6


def test_population_training_lands_on_the_optimum(cells: pl.DataFrame) -> None:
    """Within 0.3 nats of the closed-form DID entropy, or within TV 0.05 of the optimum."""
    missed = cells.filter(((pl.col("did_entropy") - pl.col("closed")).abs() > 0.3)
                          & (pl.col("final/optimum_tv") > 0.05))
    assert missed.is_empty(), missed.select("beta", "regime", "did_entropy", "closed",
                                            "final/optimum_tv")


@pytest.mark.xfail(strict=True, reason="measured: at beta 1.25 the closed forms of levels 6.3 "
                   "and 6.4 differ by 0.04 nats and the learned ones are 6.394 and 6.350; "
                   "spreading the levels (6.0) puts the lowest optimum out of reach instead "
                   "(docs/design.md §1.11)")
def test_learned_entropy_rises_with_the_level_at_every_beta(cells: pl.DataFrame) -> None:
    for beta, cell in cells.sort("tau").group_by("beta"):
        assert cell["did_entropy"].is_sorted(), (beta, cell["did_entropy"].to_list())
