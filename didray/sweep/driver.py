"""`run_sweep`: validate -> prepare -> one Tune trial per search point -> Parquet and manifest.

Layout under <storage>/<name>/: steps.parquet, trials.parquet, evals.parquet (DID-entropy
estimates; evals/ holds each trial's part), manifest.json, data/ (regime datasets and reference
caches), tune/ (Tune's experiment state, for --resume) and train/ (the Train runs and their
checkpoints, named by trial id).
"""

from __future__ import annotations

import importlib.metadata
import sys
import time
from pathlib import Path

import polars as pl

from didray.config.schema import Sweep
from didray.data.prepare import Caches, PreparedSweep, model_dtype, prepare
from didray.errors import BadInput
from didray.sampling.sampler import resolve_backend
from didray.sweep import RAY_ENV
from didray.sweep.progress import ResultsWriter
from didray.sweep.results import read_json, write_json


class SweepStateError(BadInput):
    """The results directory and the requested action disagree (e.g. rerun without --resume)."""


def say(message: str) -> None:
    print(f"[didray] {message}", file=sys.stderr, flush=True)


def search_space(sweep: Sweep) -> dict:
    from ray import tune

    s = sweep.search
    axes = {"beta": s.beta, "regime": sweep.regime_names(), "seed": s.seed}
    pick = tune.grid_search if s.mode == "grid" else tune.choice
    return {name: pick(values) for name, values in axes.items()}


def trial_constants(sweep: Sweep, prepared: PreparedSweep, sweep_dir: Path) -> dict:
    """What every trial needs besides its axes: paths to shared data, never the data itself."""
    scaling = sweep.scaling
    return {
        "sweep": sweep.name,
        "train": sweep.train.model_dump(),
        "scaling": scaling.model_dump(),
        "threads": max(1, int(scaling.cpus_per_worker)),
        "eval": sweep.eval.model_dump(),
        "sweep_dir": str(sweep_dir),
        "world": sweep.world,
        "world_dir": str(prepared.world_dir),
        "dtype": model_dtype(sweep),
        "gradient_checkpointing": bool(sweep.model.hf and sweep.model.hf.gradient_checkpointing),
        "sampler": sweep.sampler.model_dump(),
        "enum_file": prepared.enum_file and str(prepared.enum_file),
        "eval_file": prepared.eval_file and str(prepared.eval_file),
        "train_storage": str(sweep_dir / "train"),
        "regimes": {name: {"ref_file": str(r.ref_file), "data_dir": str(r.data_dir)}
                    for name, r in prepared.regimes.items()},
    }


def check_state(sweep: Sweep, sweep_dir: Path, resume: bool) -> None:
    """Refuse what would mix or overwrite results: a rerun without --resume, or a resume
    with a sweep file that differs from the one the results came from."""
    from ray import tune

    exists = (sweep_dir / "tune").exists()
    if exists and not resume:
        raise SweepStateError(
            f"{sweep_dir} already holds results of a sweep; pass --resume to continue it, or "
            "change `name` or `storage` to start a new one (nothing was changed)")
    if resume and exists and not tune.Tuner.can_restore(str(sweep_dir / "tune")):
        raise SweepStateError(f"{sweep_dir / 'tune'} has no restorable Tune state")
    before = (read_json(sweep_dir / "manifest.json", {}) or {}).get("sweep")
    now = sweep.model_dump(mode="json", exclude={"storage"})
    if resume and before is not None and {**before, "storage": None} != {**now, "storage": None}:
        changed = sorted(k for k in now if before.get(k) != now[k])
        raise SweepStateError(
            f"{sweep_dir} was written by a different sweep file (changed: {', '.join(changed)});"
            " --resume continues the original sweep only. Use a new `name` for the new one")


def start_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    env = {"env_vars": RAY_ENV}
    if address:
        # Ray's own helper processes (Train's placement-group cleaner) call ray.init() with no
        # address; with several clusters on one machine they must be told which one.
        env = {"env_vars": {**RAY_ENV, "RAY_ADDRESS": address}}
        ray.init(address=address, runtime_env=env, logging_level="WARNING")
    else:
        # The dashboard stays on: users watch sweeps there, and without it Train's placement
        # group cleaner logs a State-API warning every 2 s.
        ray.init(runtime_env=env, logging_level="WARNING")


def trial_table():
    """Tune's periodic trial table: the swept axes and the metrics a researcher watches."""
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns={"beta": "beta", "regime": "regime", "seed": "seed"},
        metric_columns={"step": "step", "loss": "loss", "rewards/accuracies": "acc",
                        "rewards/margins": "margin", "did/entropy": "DID H",
                        "did_entropy": "final DID H", "qa_accuracy": "QA"},
        max_report_frequency=30, max_column_length=14)


def build_tuner(sweep: Sweep, space: dict, sweep_dir: Path, writer: ResultsWriter, resume: bool):
    from ray import tune

    from didray.sweep.trial import TRIAL_RESOURCES, run_trial

    # The trial function only waits on its Train run; its workers hold the real CPUs.
    trainable = tune.with_resources(run_trial, TRIAL_RESOURCES)
    tune_dir = sweep_dir / "tune"
    if resume and tune_dir.exists():
        return tune.Tuner.restore(str(tune_dir), trainable=trainable,
                                  resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=sweep.scaling.max_concurrent_trials,
            num_samples=sweep.search.num_samples if sweep.search.mode == "random" else 1),
        run_config=tune.RunConfig(name="tune", storage_path=str(sweep_dir), verbose=1,
                                  progress_reporter=trial_table(),
                                  callbacks=[writer],
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def fit(tuner, sweep: Sweep):
    """`tuner.fit()` while the trials' slot actor lives (`didray.sweep.trial.TrialSlots`)."""
    import ray

    from didray.sweep.trial import start_slots

    slots = start_slots(sweep.name, sweep.scaling.max_concurrent_trials)
    try:
        return tuner.fit()
    finally:
        ray.kill(slots)


def versions() -> dict[str, str]:
    names = ("didray", "ray", "torch", "transformers", "datasets", "polars", "pydantic")
    return {n: importlib.metadata.version(n) for n in names}


def write_manifest(sweep: Sweep, source: str, prepared: PreparedSweep, counts: dict[str, int],
                   runs: list[dict], sweep_dir: Path) -> None:
    """Everything needed to trust or redo the sweep: file, hashes, cache counts, versions."""
    write_json({
        "sweep": sweep.model_dump(mode="json"),
        "sweep_file": source,
        "world_hash": prepared.world_hash,
        "sampler_backend": resolve_backend(sweep.sampler.backend),
        "eval_file": prepared.eval_file and str(prepared.eval_file),
        "regimes": {n: {"data_hash": r.data_hash, "ref_hash": r.ref_hash, "pairs": r.n_pairs,
                        "data_dir": str(r.data_dir), "ref_file": str(r.ref_file)}
                    for n, r in prepared.regimes.items()},
        "cache_computations": counts,
        "versions": versions(),
        "runs": runs,
    }, sweep_dir / "manifest.json")


def regime_columns(sweep: Sweep) -> dict[str, dict]:
    """Per regime, the columns results carry next to the regime name."""
    return {r.name: {"regime_kind": r.kind, "tau": getattr(r, "tau", None),
                     "beta_data": getattr(r, "beta_data", None)} for r in sweep.regimes}


def run_sweep(sweep: Sweep, source: str, address: str | None = None,
              resume: bool = False) -> Path:
    """Run (or resume) a whole sweep; returns its results directory."""
    # Every path handed to Ray is absolute: workers do not run in the driver's directory.
    sweep = sweep.model_copy(update={"storage": sweep.storage.resolve()})
    sweep_dir = sweep.storage / sweep.name
    check_state(sweep, sweep_dir, resume)
    resume = resume and (sweep_dir / "tune").exists()  # --resume on nothing starts afresh
    old = read_json(sweep_dir / "manifest.json", {}) or {}
    started = time.time()
    caches = Caches()
    start_ray(address)  # prepare samples pi_ref's responses on sampler actors
    prepared = prepare(sweep, sweep_dir, caches, say)
    # Counts accumulate over runs: a resumed sweep still shows each cache computed once.
    counts = dict(old.get("cache_computations", {}))
    for key, n in caches.computed.items():
        counts[key] = counts.get(key, 0) + n
    run = {"started": started, "resumed": resume, "prepare_s": time.time() - started,
           "status": "running"}
    runs = [*old.get("runs", []), run]
    write_manifest(sweep, source, prepared, counts, runs, sweep_dir)

    space = {**search_space(sweep), **trial_constants(sweep, prepared, sweep_dir)}
    writer = ResultsWriter(sweep_dir, sweep.train.steps, regime_columns(sweep))
    tuner = build_tuner(sweep, space, sweep_dir, writer, resume)
    say(f"ray: running trials; results in {sweep_dir}")
    grid = fit(tuner, sweep)
    statuses = pl.read_parquet(sweep_dir / "trials.parquet")["status"].to_list()
    ended = statuses.count("TERMINATED") + statuses.count("ERROR")
    run.update(trials_s=time.time() - started - run["prepare_s"],
               total_s=time.time() - started, errors=grid.num_errors,
               status="finished" if ended == sweep.trial_count() else "interrupted")
    write_manifest(sweep, source, prepared, counts, runs, sweep_dir)
    return sweep_dir
