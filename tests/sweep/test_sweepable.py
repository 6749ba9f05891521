"""A setting swept like beta: the issue's random search over train.lr on a real local Ray."""


import polars as pl
from support.sweeps import CI, run_here, warm, write_sweep

from didray.analysis import load
from didray.analysis.tables import entropy_vs_scores


def test_random_search_draws_the_lr_each_trial_trains_with(warm_cache, tmp_path):
    # One regime, beta and seed: the trials differ in their drawn lr only.
    path = write_sweep(tmp_path, {
        **CI, "search": {"mode": "random", "num_samples": 4, "beta": [0.1], "regime": ["pg"],
                         "train.lr": {"loguniform": [1e-4, 1e-2]}}}, name="lr.yaml")
    assert run_here(["run", str(path), "--storage", str(warm(tmp_path, warm_cache))]) == 0
    trials = pl.read_parquet(tmp_path / "ci" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"] * 4
    lrs = trials["train.lr"].to_list()
    assert len(set(lrs)) == 4 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # Each trial trained with its own lr: with the same data, batches and seed, only the lr
    # can make the losses differ, and a larger step moves the policy further from pi_ref.
    steps = pl.read_parquet(tmp_path / "ci" / "steps.parquet")
    assert steps.group_by("trial_id").agg(pl.col("train.lr").unique().len())["train.lr"] \
        .to_list() == [1] * 4
    last = (steps.filter(pl.col("step") == steps["step"].max()).sort("train.lr"))
    assert last["loss"].n_unique() == 4
    assert last["loss"].to_list() == sorted(last["loss"].to_list(), reverse=True), last
    # The analysis keeps the column and the verdict table gives each lr its own row.
    table = entropy_vs_scores(load(tmp_path / "ci"))
    assert sorted(table["train.lr"].to_list()) == sorted(lrs)
