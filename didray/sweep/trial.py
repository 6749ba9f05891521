"""One Tune trial: a (beta, regime, seed) point that launches its own Ray Train run.

Train V2's interop pattern: the Tune trainable is a plain function that builds and fits a
`TorchTrainer`; `TuneReportCallback` forwards every `ray.train.report` to Tune. The Train run
is named after the Tune trial id, so a restored sweep finds the run's checkpoints again.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import polars as pl
import ray.train
import ray.tune
import torch
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from didray.eval.estimates import entropy_estimates
from didray.eval.toy import (
    dataset_dpo_metrics,
    displacement,
    evaluate_tables,
    pair_indices,
    score_table,
)
from didray.sweep.results import write_parquet
from didray.train.worker import load_policy, train_worker
from didray.worlds import toy


def evaluate_checkpoint(checkpoint: ray.train.Checkpoint, cfg: dict,
                        trial_id: str) -> dict[str, float]:
    """Evaluate the trained policy (DESIGN pipeline step 4): exact scores, DID entropy and its
    sample estimates (written per prompt to evals/<trial id>.parquet; means returned)."""
    world, _, tokenizer = toy.load_world(cfg["world_dir"])
    ref_table = torch.load(cfg["enum_file"])  # (P, R)
    with checkpoint.as_directory() as d:
        policy = load_policy(d).eval()
    table = toy.enumerate_logps(policy, tokenizer, world)  # (P, R)
    pairs = pair_indices(world, datasets.load_from_disk(cfg["data_dir"]))
    estimates = pl.DataFrame(entropy_estimates(table, ref_table, cfg["eval"]["did_samples"],
                                               cfg["eval"]["bootstrap"], seed=cfg["seed"]))
    axes = {"trial_id": trial_id, "beta": cfg["beta"], "regime": cfg["regime"],
            "seed": cfg["seed"]}
    write_parquet(estimates.with_columns(**{k: pl.lit(v) for k, v in axes.items()}),
                  Path(cfg["sweep_dir"]) / "evals" / f"{trial_id}.parquet")
    means = estimates.group_by("estimator", "proposal").agg(pl.col("estimate").mean())
    return {**{f"did_entropy_{r['estimator']}_{r['proposal']}": r["estimate"]
               for r in means.to_dicts()},**evaluate_tables(table, ref_table, *score_table(world)),
            **displacement(table, ref_table, *pairs),
            **dataset_dpo_metrics(table, ref_table, *pairs, cfg["beta"],
                                  cfg["train"]["loss_type"])}


TRIAL_CPU = 0.01  # the trial function only waits on its Train run ({"CPU": 0} raises in Tune)


def scaling_config(scaling: dict) -> ray.train.ScalingConfig:
    """Workers give up the trial function's sliver of CPU: Tune does not count Train's
    workers, so a trial asking 0.01 + 1.0 CPUs would keep two trials off a 2-CPU node."""
    gpus = scaling["gpus_per_worker"]
    cpus = scaling["cpus_per_worker"] - TRIAL_CPU / scaling["workers_per_trial"]
    resources = {"CPU": cpus} | ({"GPU": gpus} if gpus else {})
    return ray.train.ScalingConfig(num_workers=scaling["workers_per_trial"], use_gpu=gpus > 0,
                                   resources_per_worker=resources)


def run_trial(config: dict) -> None:
    """The Tune trainable. `config` holds the trial's axes and the sweep's prepared paths."""
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
