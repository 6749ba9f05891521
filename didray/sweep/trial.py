"""One Tune trial: a (beta, regime, seed) point that launches its own Ray Train run.

Train V2's interop pattern: the Tune trainable is a plain function that builds and fits a
`TorchTrainer`; `TuneReportCallback` forwards every `ray.train.report` to Tune. The Train run
is named after the Tune trial id, so a restored sweep finds the run's checkpoints again.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import polars as pl
import ray.train
import ray.tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from didray.config.schema import Scaling
from didray.config.trial import Trial, TrialSpec
from didray.eval.estimates import RELIABLE_ESS
from didray.files import damage, read_json, seal_path, write_json
from didray.sampling.pool import SamplerPool, SharedSampler
from didray.sweep.results import write_parquet
from didray.train.worker import (
    EVALUATION_FILE,
    HISTORY_FILE,
    TuneSession,
    run_rank,
    train_worker,
)


class IncompleteTrial(RuntimeError):
    """A Train run that ended without reaching train.steps: never reported as finished."""


def trial_frame(rows: list[dict], trial: Trial, **schema: pl.DataType) -> pl.DataFrame:
    axes = {"trial_id": trial.trial_id, "beta": trial.beta, "regime": trial.regime,
            "seed": trial.seed, **trial.axes}
    frame = pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)
    return frame.with_columns(**{k: pl.lit(v) for k, v in axes.items()})


def read_final_checkpoint(checkpoint: ray.train.Checkpoint, trial: Trial
                          ) -> tuple[list[dict], dict]:
    """The run's report history and final evaluation; refuses a run short of train.steps."""
    with checkpoint.as_directory() as d:
        if problem := damage(Path(d)):
            raise IncompleteTrial(f"trial {trial.trial_id}: final checkpoint {d}: {problem}")
        history = read_json(Path(d) / HISTORY_FILE)
        evaluation = read_json(Path(d) / EVALUATION_FILE)
    steps = trial.train.steps
    if not history or history[-1]["step"] != steps or evaluation is None:
        reached = history[-1]["step"] if history else 0
        raise IncompleteTrial(f"trial {trial.trial_id}: its Train run ended at step {reached} "
                              f"of {steps} without a final evaluation; it is not finished")
    return history, evaluation


def evaluate_checkpoint(checkpoint: ray.train.Checkpoint, trial: Trial) -> dict[str, float]:
    """The trained policy's evaluation (docs/design.md §3, step 4): what the Train run's
    last report computed (toy: everything), plus the sampled evaluation in the hf world.

    Written per trial, each file replaced whole, so a retried trial never mixes with an
    earlier attempt: steps/<trial id>.parquet (every report, from the final checkpoint),
    evals/<trial id>.parquet (the estimate rows); their means per method go to the trial row
    (`did_entropy_columns`).
    """
    history, evaluation = read_final_checkpoint(checkpoint, trial)
    rows, metrics = evaluation["estimates"], evaluation["metrics"]
    if trial.spec.world == "hf":
        # Imported here: toy trials never load the scorer stack.
        from didray.eval.hf import evaluate_policy

        began = time.perf_counter()
        with checkpoint.as_directory() as d, trial_sampler(trial.spec) as pool:
            sampled_rows, sampled = evaluate_policy(d, trial, pool)
        rows, metrics = rows + sampled_rows, metrics | sampled
        metrics["time/sampled_eval_s"] = time.perf_counter() - began
    sweep_dir = trial.spec.sweep_dir
    steps, evals = (sweep_dir / part / f"{trial.trial_id}.parquet" for part in ("steps", "evals"))
    write_parquet(trial_frame(history, trial), steps)
    estimates = trial_frame(rows, trial, exact=pl.Float64)
    write_parquet(estimates, evals)
    trial.spec.storage.push(steps, seal_path(steps), evals, seal_path(evals))
    # Only the toy world's exact evaluation (didray/eval/toy.py) gives a `did_entropy`.
    exact = metrics.pop("did_entropy", None)
    # The last report's step metrics come along: Tune wants a scheduler's metric (ASHA's
    # `loss`) in every result, the final one included.
    return {**history[-1], **did_entropy_columns(estimates, exact, trial.eval.did_samples),
            **metrics}


def trial_sampler(spec: TrialSpec) -> SamplerPool:
    """The sampler actor an hf trial evaluates with: the sweep's shared one for a trial that
    trains in its own process (its bundle holds the CPUs the actor draws with), else one
    started for this trial with the sampler's own resources."""
    if in_trial_process(spec):
        return SharedSampler(spec.sweep, spec.world_dir)
    return SamplerPool(spec.world_dir, spec.sampler.model_copy(update={"actors": 1}),
                       spec.dtype)


def estimator_name(estimator: str, proposal: str, k: int) -> str:
    """plugin_k32, snis_policy_k32, snis_ref_k32: the method, its proposal where it has a
    choice (the plug-in only runs over the policy's samples), and K."""
    return f"plugin_k{k}" if estimator == "plugin" else f"{estimator}_{proposal}_k{k}"


def did_entropy_columns(estimates: pl.DataFrame, exact: float | None, k: int) -> dict:
    """The trial's DID-entropy columns (docs/design.md §6.3): each method's mean over prompts
    under a name that says the method and K, and for SNIS its weights' mean effective sample
    size (`_ess`) and the fraction of prompts where it reaches RELIABLE_ESS (`_reliable`);
    `did_entropy_exact` where the world enumerates; and `did_entropy`, what tables use, named
    by `did_entropy_estimator`: the exact value where there is one, else the paper's plug-in
    over the policy's K samples (docs/design.md §1.8). SNIS is never the headline: on long hf
    responses its weights put all the mass on one sample (SmolLM2: ESS about 1, an estimate
    near the largest sampled NLL), and the plug-in's bias is known (at most log K)."""
    means = (estimates.group_by("estimator", "proposal", "k", maintain_order=True)
             .agg(pl.col("estimate").mean(), pl.col("ess").mean(),
                  (pl.col("ess") >= RELIABLE_ESS).mean().alias("reliable"))
             .rows(named=True))
    columns = {}
    for r in means:
        name = f"did_entropy_{estimator_name(r['estimator'], r['proposal'], r['k'])}"
        columns[name] = r["estimate"]
        if r["ess"] is not None:
            columns |= {f"{name}_ess": r["ess"], f"{name}_reliable": r["reliable"]}
    if exact is not None:
        return {**columns, "did_entropy_exact": exact, "did_entropy": exact,
                "did_entropy_estimator": "exact"}
    chosen = estimator_name("plugin", "policy", k)
    return {**columns, "did_entropy": columns[f"did_entropy_{chosen}"],
            "did_entropy_estimator": chosen}


def scaling_config(scaling: Scaling) -> ray.train.ScalingConfig:
    gpus = scaling.gpus_per_worker
    resources = {"CPU": scaling.cpus_per_worker} | ({"GPU": gpus} if gpus else {})
    return ray.train.ScalingConfig(num_workers=scaling.workers_per_trial, use_gpu=gpus > 0,
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
    """The driver's slot actor; it lives as long as the driver (Ray: owner fate-sharing), on
    the driver's node, so losing any other node never loses the slots' count."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(TrialSlots).options(name=slots_name(sweep), num_cpus=0,
                                          scheduling_strategy=here).remote(slots)


@contextmanager
def trial_slot(sweep: str):
    slots = ray.get_actor(slots_name(sweep))  # Ray: the driver's named actor
    while not ray.get(slots.acquire.remote()):
        time.sleep(1.0)
    try:
        yield
    finally:
        slots.release.remote()


def run_trial(config: dict, spec: TrialSpec) -> None:
    """The Tune trainable: `config` holds the trial's search axes, `spec` the rest (passed by
    `tune.with_parameters`). A trial whose results are already complete on disk (a driver
    killed before Tune saved that it finished) reports them again instead of rerunning."""
    trial = Trial.of(spec, config,
                     ray.tune.get_context().get_trial_id())  # Ray: stable across Tuner.restore
    spec.fetch(trial.dataset)
    spec.storage.pull(done_file(trial))
    final = read_json(done_file(trial))
    if final is None:
        with trial_slot(spec.sweep):
            began = time.perf_counter()
            checkpoint = (train_here(trial) if in_trial_process(spec) else
                          train_on_ray_train(trial))
            final = {**evaluate_checkpoint(checkpoint, trial),
                     "checkpoint_path": checkpoint_location(checkpoint),
                     "time/trial_s": time.perf_counter() - began}
        write_json(final, done_file(trial))
        spec.storage.push(done_file(trial))
    ray.tune.report({**final, "final": True})


def checkpoint_location(checkpoint: ray.train.Checkpoint) -> str:
    """Where `didray.analysis.load_policy` finds the checkpoint: its path relative to the sweep
    (`<Tune experiment, or train>/<trial>/<checkpoint>`, where Tune and Train write it), so a
    moved or copied sweep, on a disk or a URI, reads its own weights."""
    return "/".join(PurePosixPath(checkpoint.path).parts[-3:])


def in_trial_process(spec: TrialSpec) -> bool:
    """Trials of one worker train in the Tune trial's own process, which Tune reuses from
    trial to trial (docs/design.md §3): starting a Train run costs more than training.
    Several workers need Ray Train's DDP. An hf trial's sampled evaluation runs on the
    sweep's shared sampler actor (`trials_sampler`) with the trial's CPUs; a sampler that
    asks for GPUs keeps the Train run's path, whose trial holds nothing while its own
    sampler actor holds the GPU."""
    hf_on_cpus = spec.world == "hf" and spec.sampler.gpus_per_actor == 0
    return spec.scaling.workers_per_trial == 1 and (spec.world == "toy" or hf_on_cpus)


def trial_resources(spec: TrialSpec) -> dict[str, float]:
    """A trial that trains in its own process holds a worker's resources, in the hf world at
    least the sampler's CPUs too: the shared sampler actor reserves none and draws only while
    a trial waits on it, on that trial's CPUs. One that launches a Train run only waits,
    holding none (its workers and sampler actor get whole CPUs, however many trial
    functions wait at once; Tune needs one non-zero resource in a trial's bundle, hence a
    token of memory)."""
    scaling = spec.scaling
    if not in_trial_process(spec):
        return {"CPU": 0, "memory": 2**20}
    cpus = scaling.cpus_per_worker
    if spec.world == "hf":
        cpus = max(cpus, spec.sampler.cpus_per_actor)
    return {"CPU": cpus, "GPU": scaling.gpus_per_worker}


def train_here(trial: Trial) -> ray.train.Checkpoint:
    run_rank(trial, TuneSession())
    return ray.tune.get_checkpoint()  # Ray: the final checkpoint, just reported


def done_file(trial: Trial) -> Path:
    """Written last, once a trial's steps, evals and final metrics are all on disk."""
    return trial.spec.sweep_dir / "done" / f"{trial.trial_id}.json"


def train_on_ray_train(trial: Trial) -> ray.train.Checkpoint:
    storage_path, filesystem = trial.spec.storage.for_ray(trial.spec.sweep_dir / "train")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"trial": trial},
        scaling_config=scaling_config(trial.spec.scaling),
        run_config=ray.train.RunConfig(
            name=trial.trial_id,
            storage_path=storage_path, storage_filesystem=filesystem,
            callbacks=[TuneReportCallback()],
            # Two: a damaged newest checkpoint falls back to the one before it.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # A lost worker or node: Train restarts the worker group from the latest checkpoint.
            failure_config=ray.train.FailureConfig(max_failures=trial.train.max_failures),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
    )
    return trainer.fit().checkpoint  # Ray: raises if the run failed: the trial is an ERROR
