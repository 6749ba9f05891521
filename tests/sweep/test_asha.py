"""ASHA on a real local Ray: a trial whose lr wrecks its loss is stopped at the first rung."""


import polars as pl
import ray
from support.sweeps import CI, run_here, warm, write_sweep

from didray.sweep import RAY_ENV


def test_asha_stops_the_trials_a_terrible_lr_wrecks(warm_cache, tmp_path):
    """One trial at a time (each asks for the node's 2 CPUs), in grid order: lr 0.002 first,
    recorded at the step-2 rung unopposed; lr 3 and 10 (Adam moves every weight by about lr
    in one step) reach the rung with a loss far above it and are stopped there. An order-free
    ASHA could record a bad trial first and stop nothing: the order makes the test certain."""
    path = write_sweep(tmp_path, {
        **CI, "train": {**CI["train"], "steps": 8},
        "eval": {"exact": False},  # evaluated at the last step only: quicker
        "scaling": {**CI["scaling"], "cpus_per_worker": 2, "max_concurrent_trials": 1},
        "search": {"beta": [0.1], "regime": ["pg"], "train.lr": [0.002, 3.0, 10.0],
                   "scheduler": {"asha": {"metric": "loss", "mode": "min",
                                          "grace_period": 2}}}}, name="asha.yaml")
    ray.init(num_cpus=2, runtime_env={"env_vars": RAY_ENV}, logging_level="WARNING")
    # Stopped trials ended as the sweep asked: the run succeeds.
    assert run_here(["run", str(path), "--storage", str(warm(tmp_path, warm_cache))]) == 0
    out = tmp_path / "ci"
    trials = pl.read_parquet(out / "trials.parquet").sort("train.lr")
    assert trials.select("train.lr", "status", "step").rows() == [
        (0.002, "TERMINATED", 8), (3.0, "STOPPED", 2), (10.0, "STOPPED", 2)]
    assert trials["did_entropy"].to_list()[1:] == [None, None]  # never evaluated
    steps = pl.read_parquet(out / "steps.parquet")
    # The finished trial's history starts at pi_ref (step 0); stopped ones keep what Tune saw.
    per_trial = steps.group_by("train.lr").agg(pl.col("step").sort()).sort("train.lr")
    assert per_trial["step"].to_list() == [[0, 2, 4, 6, 8], [2], [2]]
    rung = steps.filter(pl.col("step") == 2).sort("train.lr")["loss"].to_list()
    assert rung[0] < min(rung[1:]), rung
