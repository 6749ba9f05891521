"""`run_sweep`: validate -> prepare -> one Tune trial per search point -> Parquet and manifest.

What it writes where: docs/design.md §3.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from didray.config.checks import last_cut
from didray.config.schema import Sweep
from didray.config.trial import PairLaw, RegimeFiles, TrialSpec
from didray.errors import BadInput, no_room
from didray.files import TABLES, atomic_write
from didray.metrics import TIMES, labels
from didray.storage import Storage
from didray.sweep import RAY_ENV, state
from didray.sweep.lock import LOCK, SweepLock
from didray.sweep.prepare import Caches, PreparedSweep, model_dtype, prepare
from didray.sweep.progress import AXES, ResultsWriter, sealed
from didray.sweep.results import read_parquet
from didray.sweep.space import points_space, search_space
from didray.sweep.tracking import trackers


def say(message: str) -> None:
    print(f"[didray] {message}", file=sys.stderr, flush=True)


def trial_spec(sweep: Sweep, prepared: PreparedSweep, storage: Storage,
               sweep_dir: Path) -> TrialSpec:
    """What every trial needs besides its axes: settings and paths to shared data, never the
    data itself."""
    return TrialSpec(
        sweep=sweep.name, world=sweep.world, train=sweep.train, eval=sweep.eval,
        sampler=sweep.sampler, scaling=sweep.scaling, dtype=model_dtype(sweep),
        gradient_checkpointing=bool(sweep.model.hf and sweep.model.hf.gradient_checkpointing),
        storage=storage, sweep_dir=sweep_dir, world_dir=prepared.world_dir,
        regimes={key: RegimeFiles(r.data_dir, r.ref_file,
                                  PairLaw.of(sweep.regime(r.name), r.stats["tau"]))
                 for key, r in prepared.regimes.items()},
        enum_file=prepared.enum_file, eval_file=prepared.eval_file)


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


def tune_output(run_config, sweep: Sweep, verbose: bool):
    """`run_config` printing Tune's trial table (`didray run -v`) or nothing of Tune's own:
    by default didray's progress lines are the console (docs/guide.md, "Progress")."""
    run_config.verbose = 1 if verbose else 0
    run_config.progress_reporter = trial_table(sweep) if verbose else None
    return run_config


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


def build_tuner(sweep: Sweep, spec: TrialSpec, callbacks: list, todo: state.Plan,
                verbose: bool = False):
    """The Tuner of the planned experiment: tune/ (the sweep's grid) or an extension's
    tune-<n>/ (its new points), restored if the plan resumes it; Tune's trial table with
    `verbose` (tune_output)."""
    from ray import tune

    from didray.sweep.trial import in_trial_process, run_trial, trial_resources

    # The spec is passed again on restore, so a resumed sweep trains with this run's paths.
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec),
                                    trial_resources(spec))
    storage, sweep_dir = spec.storage, spec.sweep_dir
    tune_dir = sweep_dir / todo.dir
    if todo.resume:
        relocate_unstarted_trials(storage, tune_dir)
        path, filesystem = storage.for_ray(tune_dir)
        tuner = tune.Tuner.restore(path, trainable=trainable, storage_filesystem=filesystem,
                                   resume_unfinished=True, resume_errored=True)
        # Its pickled run config prints as the run that started the sweep did; this run's
        # -v decides. Tuner.restore takes no run config, so it is set on the restored one.
        tune_output(tuner._local_tuner.get_run_config(), sweep, verbose)
        return tuner
    storage_path, filesystem = storage.for_ray(sweep_dir)
    return tune.Tuner(
        trainable,
        param_space=(points_space(todo.points) if todo.points
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
        run_config=tune_output(tune.RunConfig(
            name=tune_dir.name, storage_path=storage_path, storage_filesystem=filesystem,
            callbacks=callbacks,
            # One-worker trials checkpoint through Tune; two kept, so a damaged newest
            # one falls back to the one before.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=sweep.train.max_failures)),
            sweep, verbose),
    )


def fit(tuner, sweep: Sweep, spec: TrialSpec):
    """`tuner.fit()` while the trials' slot actor (`didray.sweep.trial.TrialSlots`) and, in
    the hf world, their shared scorer actor and, for trials that train in their own process,
    their shared sampler actor live."""
    import ray

    from didray.eval.scorer_actor import trials_scorer
    from didray.sampling.pool import trials_sampler
    from didray.sweep.trial import in_trial_process, start_slots

    slots = start_slots(sweep.name, sweep.scaling.max_concurrent_trials)
    try:
        with ExitStack() as actors:
            actors.enter_context(trials_scorer(sweep.name, sweep.eval.scorer, spec.eval_file))
            if spec.world == "hf" and in_trial_process(spec):
                actors.enter_context(trials_sampler(sweep.name, spec.world_dir, spec.sampler,
                                                    spec.dtype))
            return tuner.fit()
    finally:
        ray.kill(slots)


def regime_columns(sweep: Sweep, prepared: PreparedSweep) -> dict[str, dict]:
    """Per dataset (a regime, at a data seed where data.seed is an axis), the columns results
    carry next to the regime name: its kind, beta_data and what its data encode (tau solved
    or given, data DID entropy, label statistics)."""
    def beta_data(name: str, stats: dict) -> float | None:
        return sweep.regime(name).beta_data if stats["tau"] is not None else None

    return {key: {"regime_kind": sweep.regime(r.name).kind,
                  "beta_data": beta_data(r.name, r.stats), **r.stats}
            for key, r in prepared.regimes.items()}


def run_sweep(sweep: Sweep, source: str, address: str | None = None,
              resume: bool = False, overrides: Sequence[str] = (), extend: bool = False,
              verbose: bool = False) -> Path:
    """Run (or resume, or extend) a whole sweep; returns its results directory. `sweep` is
    `source` (the file's text) with `overrides` applied; `verbose` adds Tune's trial table.
    Ray, if this call started it, is shut down when it returns, however it ends."""
    import ray

    storage = Storage.of(sweep.storage)
    sweep_dir = storage.local / sweep.name
    check_before_ray(storage, sweep_dir, resume, extend)
    # Taken before anything else: of two drivers started together, the second is refused
    # however fast the first prepares (design §3.8).
    with SweepLock(storage, sweep_dir, say):
        started = start_ray(address)  # prepare samples pi_ref's responses on sampler actors
        try:
            with sigterm_as_interrupt():
                check_resources(sweep, fixed=address is None)
                return run_on_ray(sweep, source, resume, overrides, extend, verbose)
        finally:
            if started:
                ray.shutdown()


def check_before_ray(storage: Storage, sweep_dir: Path, resume: bool, extend: bool) -> None:
    """What the environment must allow, refused in one paragraph before Ray starts: a storage
    it cannot open, a directory it cannot write (a finished sweep made read-only), Tune state
    others could write or that cannot be read (docs/design.md §3.3)."""
    storage.check()
    storage.check_writable(sweep_dir, *state.tune_dirs(sweep_dir))
    if resume or extend:  # before anything reads its Tune state
        state.check_private(sweep_dir)
    if resume and not storage.remote:  # a remote one is read by Tune only, where it lies
        latest = state.latest_dir(state.recorded(state.read_manifest(sweep_dir)))
        state.check_tune_state(sweep_dir, sweep_dir / latest)


def continue_command(file: str, overrides: Sequence[str], storage: str | None,
                     address: str | None) -> str:
    """The shell command that continues this sweep: the same file, overrides, storage and
    cluster, with --resume (without --storage it would start a new sweep elsewhere)."""
    where = [*(["--storage", storage] if storage else []),
             *(["--address", address] if address else [])]
    return shlex.join(["didray", "run", file, *overrides, *where, "--resume"])


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
    for section in ("data", "eval"):
        if scorer := getattr(sweep, section).scorer:
            asks[f"the {section} scorer actor ({section}.scorer.cpus, gpus)"] = {
                "CPU": scorer.cpus, "GPU": scorer.gpus}
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
    for entry in sweep_dir.iterdir():  # all but this driver's lease (didray.sweep.lock)
        if entry.name != LOCK:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    storage.pull(*sealed(sweep_dir, *TABLES), sweep_dir / "manifest.json", sweep_dir / "evals")


def found(storage: Storage, sweep_dir: Path, manifest: state.Manifest | None,
          resume: bool) -> state.Found:
    """What `plan` needs to know of the results directory; Tune judges its own saved state."""
    from ray import tune

    latest = sweep_dir / state.latest_dir(state.recorded(manifest))
    exists = storage.exists(latest)
    path, filesystem = storage.for_ray(latest)
    restorable = resume and exists and tune.Tuner.can_restore(
        path, storage_filesystem=filesystem)
    return state.Found(latest=exists, restorable=restorable, remote=storage.remote)


def run_on_ray(sweep: Sweep, source: str, resume: bool, overrides: Sequence[str],
               extend: bool = False, verbose: bool = False) -> Path:
    # Every path handed to Ray is absolute: workers do not run in the driver's directory.
    storage = Storage.of(sweep.storage)
    sweep = sweep.model_copy(update={"storage": storage.uri or str(storage.local)})
    sweep_dir = storage.local / sweep.name
    mirror_results(storage, sweep_dir)
    state.check_rerun(sweep_dir, storage.exists(sweep_dir / state.BASE), resume, extend)
    old = state.read_manifest(sweep_dir)
    # An extension is one more Tune experiment over the new points only: the finished
    # experiments stay as they are, and the results tables gain the new trials' rows.
    todo = state.plan(old, sweep, sweep_dir, found(storage, sweep_dir, old, resume), resume,
                      extend, overrides)
    tracked = trackers(sweep)  # a missing tracker package fails now, not after prepare
    started = time.time()
    caches = Caches()
    prepared = prepare(sweep, caches, say)
    counts = state.cache_counts(old, caches.computed)
    sealed = state.sealed(old, sweep_dir)

    def record(run: state.Run) -> None:
        manifest = state.manifest_of(sweep, source, prepared, overrides, counts,
                                     state.runs_with(old, run), todo.extensions, sealed)
        state.write_manifest(manifest, storage, sweep_dir)

    run = state.Run(started=started, resumed=todo.resume, extended=extend,
                    prepare_s=time.time() - started, status="running")
    record(run)
    writer = ResultsWriter(sweep_dir, sweep.train.steps, regime_columns(sweep, prepared),
                           storage=storage)
    spec = trial_spec(sweep, prepared, storage, sweep_dir)
    tuner = build_tuner(sweep, spec, [writer, *tracked], todo, verbose)
    say(f"ray: running trials; results in {sweep_dir}")
    grid = fit(tuner, sweep, spec)
    trials = read_parquet(sweep_dir / "trials.parquet", sweep_dir)
    spent = {m.name: float(trials[m.name].sum()) for m in TIMES if m.name in trials.columns}
    if spent:
        say("seconds in trials (summed): " + ", ".join(
            f"{name.removeprefix('time/').removesuffix('_s')} {value:.1f}"
            for name, value in spent.items()))
    record(state.ended(run, trials["status"].to_list(), sweep.trial_count(), grid.num_errors,
                       spent, time.time()))
    raise_no_room(grid)
    return sweep_dir


def raise_no_room(grid) -> None:
    """Raise the error of a trial that found no room for a write in its own process (its
    checkpoint, its tables): Tune ends it as an errored trial, its error only in
    trials.parquet, where the driver's own full disk is one paragraph and exit 2 (`didray
    run`, errors.NoRoom). Raised after the run is recorded: Tune keeps the trial errored,
    so --resume runs it again once there is room (docs/design.md §3.3)."""
    for err in grid.errors:
        if no_room(err):
            raise err
