"""One Tune trial: a (beta, regime, seed) point that launches its own Ray Train run.

Train V2's interop pattern: the Tune trainable is a plain function that builds and fits a
`TorchTrainer`; `TuneReportCallback` forwards every `ray.train.report` to Tune. The Train run
is named after the Tune trial id, so a restored sweep finds the run's checkpoints again.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import datasets
import polars as pl
import ray.train
import ray.tune
import torch
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from didray.eval import hf as hf_eval
from didray.eval.estimates import entropy_estimates
from didray.eval.pairs import pair_metrics
from didray.eval.toy import (
    evaluate_tables,
    pair_indices,
    score_table,
    table_pairs,
)
from didray.sweep.results import write_parquet
from didray.train.worker import train_worker
from didray.worlds import toy
from didray.worlds.policy import load_policy


def evaluate_toy(policy_dir: str, cfg: dict) -> tuple[list[dict], dict[str, float]]:
    """Exact scores and DID entropy by enumeration, and sample estimates next to the exact
    values (drawn from the exact tables: what a sampler of the toy policy would draw)."""
    world, _, tokenizer = toy.load_world(cfg["world_dir"])
    ref_table = torch.load(cfg["enum_file"])  # (P, R)
    table = toy.enumerate_logps(load_policy(policy_dir)[0].eval(), tokenizer, world)  # (P, R)
    pairs = pair_indices(world, datasets.load_from_disk(cfg["data_dir"]))
    rows = entropy_estimates(table, ref_table, cfg["eval"]["did_samples"],
                             cfg["eval"]["bootstrap"], seed=cfg["seed"])
    return rows, {**evaluate_tables(table, ref_table, *score_table(world)),
                  **pair_metrics(table_pairs(table, *pairs), table_pairs(ref_table, *pairs),
                                 cfg["beta"], cfg["train"]["loss_type"])}


def evaluate_checkpoint(checkpoint: ray.train.Checkpoint, cfg: dict,
                        trial_id: str) -> dict[str, float]:
    """Evaluate the trained policy (docs/design.md §3, step 4): scores, DID entropy and its
    sample estimates (written per prompt to evals/<trial id>.parquet; means returned).

    In the hf world the trial's DID entropy is the paper's estimate: the deduplicated plug-in
    over the policy's own K samples. It lies in [0, log K], so trials compare at one K; the
    snis estimates (also stored) carry each sequence's full log-prob and, on 48-token
    responses, swing by tens of nats between prompts (measured on SmolLM2).
    """
    evaluate = evaluate_toy if cfg["world"] == "toy" else hf_eval.evaluate_policy
    with checkpoint.as_directory() as d:
        rows, metrics = evaluate(d, cfg)
    estimates = pl.DataFrame(rows, schema_overrides={"exact": pl.Float64})
    axes = {"trial_id": trial_id, "beta": cfg["beta"], "regime": cfg["regime"],
            "seed": cfg["seed"]}
    write_parquet(estimates.with_columns(**{k: pl.lit(v) for k, v in axes.items()}),
                  Path(cfg["sweep_dir"]) / "evals" / f"{trial_id}.parquet")
    means = {f"did_entropy_{r['estimator']}_{r['proposal']}": r["estimate"] for r in
             estimates.group_by("estimator", "proposal").agg(pl.col("estimate").mean()).to_dicts()}
    if cfg["world"] == "hf":
        metrics["did_entropy"] = means["did_entropy_plugin_policy"]
    return {**means, **metrics}


# The trial function only waits on its Train run and evaluation, so it holds no CPU: its
# workers and sampler actor get whole CPUs, however many trial functions wait at once (Tune
# needs one non-zero resource in a trial's bundle, hence a token of memory).
TRIAL_RESOURCES = {"CPU": 0, "memory": 2**20}


def scaling_config(scaling: dict) -> ray.train.ScalingConfig:
    gpus = scaling["gpus_per_worker"]
    resources = {"CPU": scaling["cpus_per_worker"]} | ({"GPU": gpus} if gpus else {})
    return ray.train.ScalingConfig(num_workers=scaling["workers_per_trial"], use_gpu=gpus > 0,
                                   resources_per_worker=resources)


class TrialSlots:
    """`max_concurrent_trials`, enforced by the trials themselves. Tune starts every unfinished
    or errored trial of a restored sweep at once (ray-project/ray#40652); on a small node their
    Train workers and evaluation actors would then crowd the cluster beyond what the sweep
    file allows."""

    def __init__(self, slots: int) -> None:
        self.free = slots

    def acquire(self) -> bool:
        taken = self.free > 0
        self.free -= taken
        return taken

    def release(self) -> None:
        self.free += 1


def slots_name(sweep: str) -> str:
    return f"didray-trial-slots-{sweep}"


def start_slots(sweep: str, slots: int):
    """The driver's slot actor; it lives as long as the driver (Ray: owner fate-sharing)."""
    return ray.remote(TrialSlots).options(name=slots_name(sweep), num_cpus=0).remote(slots)


@contextmanager
def trial_slot(sweep: str):
    slots = ray.get_actor(slots_name(sweep))  # Ray: the driver's named actor
    while not ray.get(slots.acquire.remote()):
        time.sleep(1.0)
    try:
        yield
    finally:
        slots.release.remote()


def run_trial(config: dict) -> None:
    """The Tune trainable. `config` holds the trial's axes and the sweep's prepared paths."""
    with trial_slot(config["sweep"]):
        train_and_evaluate(config)


def train_and_evaluate(config: dict) -> None:
    trial_id = ray.tune.get_context().get_trial_id()  # Ray: stable across Tuner.restore
    cfg = {**config, **config["regimes"][config["regime"]], "trial_id": trial_id}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=cfg,
        scaling_config=scaling_config(cfg["scaling"]),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=cfg["train_storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=0),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    result = trainer.fit()  # Ray: raises if the run failed, which marks the trial ERROR
    metrics = evaluate_checkpoint(result.checkpoint, cfg, trial_id)
    ray.tune.report({**metrics, "final": True,
                     "checkpoint_path": str(Path(result.checkpoint.path))})
