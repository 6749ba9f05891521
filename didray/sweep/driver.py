"""`run_sweep`: validate -> prepare -> one Tune trial per search point -> Parquet and manifest.

Layout under <storage>/<name>/: steps.parquet, trials.parquet, evals.parquet (DID-entropy
estimates; evals/ holds each trial's part), manifest.json, tune/ (Tune's experiment state, for
--resume) and train/ (the Train runs and their checkpoints, named by trial id). pi_ref, the
regime datasets and reference caches live in <storage>/cache/, shared by every sweep there
(didray.sweep.prepare.Store); the manifest names the entries this sweep used.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from didray.config.checks import last_cut
from didray.config.load import parse_sweep
from didray.config.schema import Sweep
from didray.config.trial import PairLaw, RegimeFiles, TrialSpec
from didray.errors import BadInput
from didray.files import TABLES, atomic_write, read_manifest, write_json
from didray.metrics import TIMES, labels
from didray.sampling.sampler import resolve_backend
from didray.storage import Storage
from didray.sweep import RAY_ENV
from didray.sweep.prepare import Caches, PreparedSweep, model_dtype, prepare
from didray.sweep.progress import AXES, ResultsWriter, sealed
from didray.sweep.results import read_parquet
from didray.sweep.tracking import trackers

# 2: trials get a typed TrialSpec through tune.with_parameters; Tune state written by version 1
# (the whole sweep config in param_space) cannot be restored by this code.
MANIFEST_VERSION = 2


class SweepStateError(BadInput):
    """The results directory and the requested action disagree (e.g. rerun without --resume)."""


def say(message: str) -> None:
    print(f"[didray] {message}", file=sys.stderr, flush=True)


def search_space(sweep: Sweep) -> dict:
    """Tune's param_space: beta, regime, seed and every train.* / eval.* axis by its dotted
    path. Grid mode crosses the lists; random mode draws each list with tune.choice and each
    distribution with its Tune sampler."""
    from ray import tune

    s = sweep.search
    pick = tune.grid_search if s.mode == "grid" else tune.choice
    lists = {"beta": s.beta, "regime": sweep.regime_names(), "seed": s.seed}
    samplers = {"loguniform": tune.loguniform, "uniform": tune.uniform}
    return {**{name: pick(values) for name, values in lists.items()},
            **{path: pick(axis) if isinstance(axis, list) else
               samplers[axis.kind](*axis.values) if axis.kind in samplers else
               tune.choice(axis.values)
               for path, axis in s.axes.items()}}


def grid_points(sweep: Sweep) -> list[dict]:
    """Every search point of a grid sweep, as Tune's config of its trial."""
    space = search_space(sweep)
    return [dict(zip(space, values, strict=True))
            for values in itertools.product(*(axis["grid_search"] for axis in space.values()))]


def points_space(points: list[dict]) -> dict:
    """Tune's param_space for a list of search points (an extension's new ones): a grid over
    their indices, each axis read from the indexed point, so trial configs hold the same axes
    as the base grid's (plus `point`)."""
    from ray import tune

    return {"point": tune.grid_search(list(range(len(points)))),
            **{axis: tune.sample_from(lambda config, axis=axis: points[config["point"]][axis])
               for axis in points[0]}}


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def extension(sweep: Sweep, manifest: dict) -> dict:
    """The next Tune experiment of `--extend`: the search points of `sweep` that the recorded
    sweep did not have. Refused unless the sweep file differs only in its search axes, every
    recorded point is kept and one at least is new."""
    before = manifest["sweep"]
    now = sweep.model_dump(mode="json")
    changed = sorted(k for k in now if k not in ("storage", "search") and before.get(k) != now[k])
    if changed:
        raise SweepStateError(f"--extend adds search values only; the sweep also changed: "
                              f"{', '.join(changed)} (nothing was changed)")
    old = parse_sweep(before)
    if "random" in (old.search.mode, sweep.search.mode):
        raise SweepStateError("--extend adds grid points; a random search cannot be extended "
                              "(run a new sweep under another `name`)")
    then, points = {point_key(p) for p in grid_points(old)}, grid_points(sweep)
    if lost := then - {point_key(p) for p in points}:
        raise SweepStateError(f"--extend keeps every search point run so far; {len(lost)} of "
                              "them are missing from the sweep (search values were removed)")
    new = [p for p in points if point_key(p) not in then]
    if not new:
        raise SweepStateError("--extend: the sweep adds no search point; nothing to run")
    return {"dir": f"tune-{len(manifest.get('extensions', [])) + 2}", "points": new}


def trial_spec(sweep: Sweep, prepared: PreparedSweep, storage: Storage,
               sweep_dir: Path) -> TrialSpec:
    """What every trial needs besides its axes: settings and paths to shared data, never the
    data itself."""
    return TrialSpec(
        sweep=sweep.name, world=sweep.world, train=sweep.train, eval=sweep.eval,
        sampler=sweep.sampler, scaling=sweep.scaling, dtype=model_dtype(sweep),
        gradient_checkpointing=bool(sweep.model.hf and sweep.model.hf.gradient_checkpointing),
        storage=storage, sweep_dir=sweep_dir, world_dir=prepared.world_dir,
        regimes={name: RegimeFiles(r.data_dir, r.ref_file,
                                   PairLaw.of(sweep.regime(name), r.stats["tau"]))
                 for name, r in prepared.regimes.items()},
        enum_file=prepared.enum_file, eval_file=prepared.eval_file)


def experiment_dir(sweep_dir: Path, manifest: dict) -> Path:
    """The sweep's latest Tune experiment: tune/, or the last extension's tune-<n>/."""
    return sweep_dir / ([{"dir": "tune"}, *manifest.get("extensions", [])][-1]["dir"])


def check_state(sweep: Sweep, storage: Storage, sweep_dir: Path, resume: bool,
                overrides: Sequence[str] = (), extend: bool = False) -> None:
    """Refuse what would mix or overwrite results: a rerun without --resume, a resume whose
    sweep (file and overrides, compared once resolved) differs from the one the results came
    from, or an extension of a sweep that has not finished."""
    from ray import tune

    exists = storage.exists(sweep_dir / "tune")
    if exists and not (resume or extend):
        raise SweepStateError(
            f"{sweep_dir} already holds results of a sweep; pass --resume to continue it, or "
            "change `name` or `storage` to start a new one (nothing was changed)")
    if extend and not exists:
        raise SweepStateError(f"{sweep_dir} holds no sweep to extend; run it without --extend")
    manifest = read_manifest(sweep_dir / "manifest.json")
    latest = experiment_dir(sweep_dir, manifest)
    path, filesystem = storage.for_ray(latest)
    if resume and storage.exists(latest) and not tune.Tuner.can_restore(
            path, storage_filesystem=filesystem):
        raise SweepStateError(f"{latest} has no restorable Tune state")
    if (resume or extend) and storage.remote and manifest.get("sweep", {}).get(
            "storage") not in (None, sweep.storage):
        raise SweepStateError(
            f"{sweep.storage} holds a sweep written to {manifest['sweep']['storage']}: a sweep "
            "on a URI storage resumes or extends where it was written (Tune's saved state "
            "names that place); run it with the storage it was written to")
    if (resume or extend) and exists and manifest.get("version") != MANIFEST_VERSION:
        raise SweepStateError(
            f"{sweep_dir} was written by an older didray (manifest version "
            f"{manifest.get('version', 1)}, this one writes {MANIFEST_VERSION}); its trial "
            "state cannot be resumed. Its results stay readable by `didray analyze`; run the "
            "sweep anew under another `name` or `storage`")
    if extend and manifest.get("runs", [{}])[-1].get("status") != "finished":
        raise SweepStateError(f"{sweep_dir}'s last run did not finish; finish it with --resume "
                              "(its recorded sweep file and overrides), then --extend")
    if resume and (change := sweep_change(manifest, sweep, overrides)):
        raise SweepStateError(
            f"{sweep_dir} was written by a different sweep file or overrides ({change}); "
            "--resume continues the original sweep only. Use a new `name` for the new one")


def sweep_change(manifest: dict, sweep: Sweep, overrides: Sequence[str]) -> str | None:
    """What differs between the resolved sweep in `manifest` and `sweep` (file and overrides
    both resolved, so `train.lr=2e-3` resumes a sweep run with `train.lr=0.002`); None if
    nothing does. The storage path may differ: a moved sweep resumes in its new place."""
    before = manifest.get("sweep")
    now = sweep.model_dump(mode="json")
    if before is None or {**before, "storage": None} == {**now, "storage": None}:
        return None
    changed = sorted(k for k in now if k != "storage" and before.get(k) != now[k])
    then = " ".join(manifest.get("overrides", [])) or "none"
    return (f"changed: {', '.join(changed)}; overrides then: {then}, now: "
            f"{' '.join(overrides) or 'none'}")


def check_address(address: str | None) -> None:
    """An http(s) address is the Jobs API's (`didray submit`), which ray.init cannot join: say
    so in one paragraph instead of Ray's traceback (the cluster README exports it)."""
    if address and address.startswith(("http://", "https://")):
        raise BadInput(
            f"Ray address {address!r} (from --address or RAY_ADDRESS) is a dashboard / Jobs "
            "API address: `didray submit` takes it, but `didray run` joins a cluster through "
            "its GCS: use `--address auto` on a cluster node or `--address ray://HEAD:10001`, "
            "or unset RAY_ADDRESS to run on an embedded local Ray")


def start_ray(address: str | None) -> bool:
    """Connect to `address` or start an embedded Ray; returns whether this call started an
    embedded one (which the sweep then shuts down; a cluster's connection stays open)."""
    import ray

    if ray.is_initialized():
        return False
    check_address(address or os.environ.get("RAY_ADDRESS"))
    env = {"env_vars": RAY_ENV}
    if address:
        # Ray's own helper processes (Train's placement-group cleaner) call ray.init() with no
        # address; with several clusters on one machine they must be told which one.
        env = {"env_vars": {**RAY_ENV, "RAY_ADDRESS": address}}
        ray.init(address=address, runtime_env=env, logging_level="WARNING")
        return False
    # The dashboard stays on: users watch sweeps there, and without it Train's placement
    # group cleaner logs a State-API warning every 2 s.
    ray.init(runtime_env=env, logging_level="WARNING")
    return True


def trial_table(sweep: Sweep):
    """Tune's periodic trial table: the swept axes and the metrics a researcher watches."""
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns={axis: axis for axis in (*AXES, *sweep.search.axes)},
        metric_columns=labels(),
        max_report_frequency=30, max_column_length=14)


def relocate_unstarted_trials(storage: Storage, tune_dir: Path) -> None:
    """Point Tune's saved grid generator at `tune_dir`. Tune.restore moves the trials it had
    created to a moved sweep's new place, but the generator keeps the storage of trials not
    created yet pickled with the old path, in its spec and in each variant it generated from
    it: they would write there (re-creating it if it was removed), and the results writer,
    which follows each trial's storage, with them."""
    import ray.cloudpickle as cloudpickle

    for path in storage.files(tune_dir, "basic-variant-state-*.json"):
        storage.pull(path)
        state = cloudpickle.loads(path.read_bytes())
        for iterator in state["_iterators"]:
            variants = iterator.variants.iterable if iterator.variants else []
            for spec in [iterator.unresolved_spec, *(spec for _, spec in variants)]:
                spec["storage"].storage_fs_path = storage.for_ray(tune_dir.parent)[0]
        atomic_write(path, lambda tmp, state=state: Path(tmp).write_bytes(
            cloudpickle.dumps(state)))
        storage.push(path)


def scheduler(sweep: Sweep):
    """ASHA on train steps where the sweep asks for it, else Tune's default (none stops).
    stop_last_trials=False: max_t places the last rung, it does not cut trials that pass
    it short of train.steps (`ASHA.max_t`)."""
    from ray.tune.schedulers import ASHAScheduler

    if sweep.search.scheduler is None:
        return None
    asha = sweep.search.scheduler.asha
    return ASHAScheduler(time_attr="step", metric=asha.metric, mode=asha.mode,
                         grace_period=asha.grace_period,
                         max_t=asha.max_t or last_cut(sweep.train),
                         reduction_factor=asha.reduction_factor, stop_last_trials=False)


def build_tuner(sweep: Sweep, spec: TrialSpec, callbacks: list, resume: bool,
                experiment: dict):
    """The Tuner of `experiment`: tune/ (the sweep's grid) or an extension's tune-<n>/ (its
    new points), restored if `resume` finds its state."""
    from ray import tune

    from didray.sweep.trial import in_trial_process, run_trial, trial_resources

    # The spec is passed again on restore, so a resumed sweep trains with this run's paths.
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec),
                                    trial_resources(spec))
    storage, sweep_dir = spec.storage, spec.sweep_dir
    tune_dir = sweep_dir / experiment["dir"]
    if resume:
        relocate_unstarted_trials(storage, tune_dir)
        path, filesystem = storage.for_ray(tune_dir)
        return tune.Tuner.restore(path, trainable=trainable, storage_filesystem=filesystem,
                                  resume_unfinished=True, resume_errored=True)
    storage_path, filesystem = storage.for_ray(sweep_dir)
    return tune.Tuner(
        trainable,
        param_space=(points_space(experiment["points"]) if "points" in experiment
                     else search_space(sweep)),
        tune_config=tune.TuneConfig(
            # Trials that train in their own process hold a worker's resources, and the
            # trial slots enforce max_concurrent_trials. Trials that wait on a Train run hold
            # nothing: Tune's limit keeps their processes few.
            max_concurrent_trials=(None if in_trial_process(spec)
                                   else sweep.scaling.max_concurrent_trials),
            # A trial process that trains itself stays warm for the next trial.
            reuse_actors=in_trial_process(spec),
            scheduler=scheduler(sweep),
            num_samples=sweep.search.num_samples if sweep.search.mode == "random" else 1),
        run_config=tune.RunConfig(name=tune_dir.name, storage_path=storage_path,
                                  storage_filesystem=filesystem, verbose=1,
                                  progress_reporter=trial_table(sweep),
                                  callbacks=callbacks,
                                  # One-worker toy trials checkpoint through Tune; two kept,
                                  # so a damaged newest one falls back to the one before.
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                  failure_config=tune.FailureConfig(
                                      max_failures=sweep.train.max_failures)),
    )


def fit(tuner, sweep: Sweep, eval_file: Path | None):
    """`tuner.fit()` while the trials' slot actor (`didray.sweep.trial.TrialSlots`) and, in
    the hf world, their shared scorer actor live."""
    import ray

    from didray.eval.scorer_actor import trials_scorer
    from didray.sweep.trial import start_slots

    slots = start_slots(sweep.name, sweep.scaling.max_concurrent_trials)
    try:
        with trials_scorer(sweep.name, sweep.eval.scorer, eval_file):
            return tuner.fit()
    finally:
        ray.kill(slots)


def versions() -> dict[str, str]:
    names = ("didray", "ray", "torch", "transformers", "datasets", "polars", "pydantic")
    return {n: importlib.metadata.version(n) for n in names}


def write_manifest(sweep: Sweep, source: str, prepared: PreparedSweep, counts: dict[str, int],
                   runs: list[dict], storage: Storage, sweep_dir: Path,
                   overrides: Sequence[str] = (), extensions: Sequence[dict] = ()) -> None:
    """Everything needed to trust or redo the sweep: file and command-line overrides (`sweep`
    is the result of both), hashes, cache counts, versions, and the Tune experiments that
    `--extend` added (each with its new search points: what --resume runs if it was cut
    short)."""
    write_json({
        "version": MANIFEST_VERSION,
        "sweep": sweep.model_dump(mode="json"),
        "sweep_file": source,
        "overrides": list(overrides),
        "world_hash": prepared.world_hash,
        "sampler_backend": resolve_backend(sweep.sampler.backend),
        "world_dir": str(prepared.world_dir),
        "enum_file": prepared.enum_file and str(prepared.enum_file),
        "eval_file": prepared.eval_file and str(prepared.eval_file),
        "regimes": {n: {"data_hash": r.data_hash, "ref_hash": r.ref_hash, "pairs": r.n_pairs,
                        "data_dir": str(r.data_dir), "ref_file": str(r.ref_file)}
                    for n, r in prepared.regimes.items()},
        "cache_computations": counts,
        "versions": versions(),
        "runs": runs,
        "extensions": list(extensions),
    }, sweep_dir / "manifest.json")
    storage.push(sweep_dir / "manifest.json")


def regime_columns(sweep: Sweep, prepared: PreparedSweep) -> dict[str, dict]:
    """Per regime, the columns results carry next to the regime name: its kind, beta_data
    and what its data encode (tau solved or given, data DID entropy, label statistics)."""
    def beta_data(name: str, stats: dict) -> float | None:
        return sweep.regime(name).beta_data if stats["tau"] is not None else None

    return {name: {"regime_kind": sweep.regime(name).kind,
                   "beta_data": beta_data(name, r.stats), **r.stats}
            for name, r in prepared.regimes.items()}


def run_sweep(sweep: Sweep, source: str, address: str | None = None,
              resume: bool = False, overrides: Sequence[str] = (), extend: bool = False) -> Path:
    """Run (or resume, or extend) a whole sweep; returns its results directory. `sweep` is
    `source` (the file's text) with `overrides` applied. Ray, if this call started it, is shut
    down when it returns, however it ends."""
    import ray

    Storage.of(sweep.storage).check()  # a storage it cannot write fails before Ray starts
    started = start_ray(address)  # prepare samples pi_ref's responses on sampler actors
    try:
        with sigterm_as_interrupt():
            check_resources(sweep, fixed=address is None)
            return run_on_ray(sweep, source, resume, overrides, extend)
    finally:
        if started:
            ray.shutdown()


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a scheduler, `kill`) stops a sweep like Ctrl-C: Tune saves its state and the
    embedded Ray is shut down, so `--resume` continues. Installed after ray.init, whose own
    handler would abort the process and leave Ray's processes behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    before = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def resource_asks(sweep: Sweep) -> dict[str, dict[str, float]]:
    """What one process of each kind asks of a single node."""
    scaling, sampler = sweep.scaling, sweep.sampler
    worker = {"CPU": scaling.cpus_per_worker, "GPU": scaling.gpus_per_worker}
    actor = {"CPU": sampler.cpus_per_actor, "GPU": sampler.gpus_per_actor}
    asks = {"a Train worker (scaling.cpus_per_worker, gpus_per_worker)": worker,
            "a sampler actor (sampler.cpus_per_actor, gpus_per_actor)": actor}
    if scorer := sweep.eval.scorer:
        asks["the scorer actor (eval.scorer.cpus, gpus)"] = {"CPU": scorer.cpus,
                                                             "GPU": scorer.gpus}
    return asks


def check_resources(sweep: Sweep, fixed: bool) -> None:
    """Refuse at once what no node can ever hold, instead of waiting forever for it. A cluster
    given by --address may autoscale: there it is a warning, and Ray waits for new nodes."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    for what, ask in resource_asks(sweep).items():
        if any(all(node.get(k, 0) >= v for k, v in ask.items() if v) for node in nodes):
            continue
        largest = max(nodes, key=lambda n: n.get("CPU", 0))
        message = (f"{what} asks for {ask['CPU']:g} CPU and {ask['GPU']:g} GPU, but no node of "
                   f"this Ray cluster has that much (the largest has {largest.get('CPU', 0):g} "
                   f"CPU, {largest.get('GPU', 0):g} GPU)")
        if fixed:
            raise BadInput(f"{message}; lower the ask in the sweep file or run on a larger "
                           "cluster with --address (nothing was started)")
        say(f"warning: {message}; waiting for the autoscaler to add one")


def mirror_results(storage: Storage, sweep_dir: Path) -> None:
    """A remote sweep's mirror made a copy of what the remote holds of its results (nothing
    for a new sweep): a mirror left by an earlier sweep of this name, since deleted remotely,
    must not lend it rows. Tune's and Train's directories stay remote (Ray reads them)."""
    if not storage.remote:
        return
    shutil.rmtree(sweep_dir, ignore_errors=True)
    storage.pull(*sealed(sweep_dir, *TABLES), sweep_dir / "manifest.json", sweep_dir / "evals")


def run_on_ray(sweep: Sweep, source: str, resume: bool, overrides: Sequence[str],
               extend: bool = False) -> Path:
    # Every path handed to Ray is absolute: workers do not run in the driver's directory.
    storage = Storage.of(sweep.storage)
    sweep = sweep.model_copy(update={"storage": storage.uri or str(storage.local)})
    sweep_dir = storage.local / sweep.name
    mirror_results(storage, sweep_dir)
    check_state(sweep, storage, sweep_dir, resume, overrides, extend)
    tracked = trackers(sweep)  # a missing tracker package fails now, not after prepare
    old = read_manifest(sweep_dir / "manifest.json")
    # An extension is one more Tune experiment over the new points only: the finished
    # experiments stay as they are, and the results tables gain the new trials' rows.
    extensions = [*old.get("extensions", []), *([extension(sweep, old)] if extend else [])]
    experiment = [{"dir": "tune"}, *extensions][-1]
    resume = resume and storage.exists(sweep_dir / experiment["dir"])  # on nothing: afresh
    started = time.time()
    caches = Caches()
    prepared = prepare(sweep, caches, say)
    # Counts accumulate over runs: a resumed sweep still shows each cache computed once.
    counts = dict(old.get("cache_computations", {}))
    for key, n in caches.computed.items():
        counts[key] = counts.get(key, 0) + n
    run = {"started": started, "resumed": resume, "extended": extend,
           "prepare_s": time.time() - started, "status": "running"}
    runs = [*old.get("runs", []), run]
    write_manifest(sweep, source, prepared, counts, runs, storage, sweep_dir, overrides,
                   extensions)

    writer = ResultsWriter(sweep_dir, sweep.train.steps, regime_columns(sweep, prepared),
                           storage=storage)
    tuner = build_tuner(sweep, trial_spec(sweep, prepared, storage, sweep_dir),
                        [writer, *tracked], resume, experiment)
    say(f"ray: running trials; results in {sweep_dir}")
    grid = fit(tuner, sweep, prepared.eval_file)
    trials = read_parquet(sweep_dir / "trials.parquet")
    statuses = trials["status"].to_list()
    spent = {m.name: float(trials[m.name].sum()) for m in TIMES if m.name in trials.columns}
    if spent:
        say("seconds in trials (summed): " + ", ".join(
            f"{name.removeprefix('time/').removesuffix('_s')} {value:.1f}"
            for name, value in spent.items()))
    # STOPPED: cut short by the scheduler (ASHA), as ended as a finished or failed trial.
    ended = sum(map(statuses.count, ("TERMINATED", "ERROR", "STOPPED")))
    run.update(trials_s=time.time() - started - run["prepare_s"],
               total_s=time.time() - started, errors=grid.num_errors, trial_seconds=spent,
               status="finished" if ended == sweep.trial_count() else "interrupted")
    write_manifest(sweep, source, prepared, counts, runs, storage, sweep_dir, overrides,
                   extensions)
    return sweep_dir
