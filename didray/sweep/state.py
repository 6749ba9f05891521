"""A sweep's recorded state, `<storage>/<name>/manifest.json`, and what it allows.

`Manifest` is the file, typed; `read_manifest` / `write_manifest` move it to and from disk.
Whether a run may start, resume or extend is decided by pure functions over a Manifest, the
requested Sweep and the flags, plus what the driver looked up (`Found`): no Ray, no storage.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

from didray.config.load import parse_sweep
from didray.config.schema import Sweep
from didray.errors import BadInput
from didray.files import has_seals, manifest_json, write_json
from didray.sampling.sampler import resolve_backend
from didray.storage import Storage
from didray.sweep.space import grid_points, point_key

if TYPE_CHECKING:
    from didray.sweep.prepare import PreparedSweep

# 2: trials get a typed TrialSpec through tune.with_parameters; Tune state written by version 1
# (the whole sweep config in param_space) cannot be restored by this code.
MANIFEST_VERSION = 2
BASE = "tune"  # the first Tune experiment's directory; an extension's is tune-<n>


class SweepStateError(BadInput):
    """The results directory and the requested action disagree (e.g. rerun without --resume)."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegimeEntry(Record):
    """The cache entries of one regime (`didray.sweep.prepare.Store`)."""
    data_hash: str
    ref_hash: str
    pairs: int
    data_dir: Path
    ref_file: Path


class Extension(Record):
    """One `--extend`: its Tune experiment's directory and the new points it runs."""
    dir: str
    points: tuple[dict[str, Any], ...]


class Run(Record):
    """One `didray run`; the timings and counts come when its trials have ended."""
    started: float
    resumed: bool
    extended: bool = False  # manifests written before --extend existed lack it
    prepare_s: float
    status: Literal["running", "finished", "interrupted"]
    trials_s: float | None = None
    total_s: float | None = None
    errors: int | None = None
    trial_seconds: dict[str, float] | None = None

    @model_serializer(mode="wrap")
    def _ended_only(self, handler) -> dict:
        # A running run is written without the keys of an ended one, not with nulls.
        return {k: v for k, v in handler(self).items() if v is not None}


class Manifest(Record):
    """Everything needed to trust or redo a sweep: the resolved sweep (file and command-line
    overrides applied), hashes and cache entries, cache counts, versions, its runs, and the
    Tune experiments `--extend` added (each with its new points: what --resume runs if it was
    cut short). Fields with a default were added during version 2."""
    version: int
    # The sweep as JSON, not a Sweep: a manifest stays readable when the schema grows.
    sweep: dict[str, Any]
    sweep_file: str
    overrides: tuple[str, ...] = ()
    world_hash: str
    sampler_backend: str
    world_dir: Path | None = None
    enum_file: Path | None = None
    eval_file: Path | None
    regimes: dict[str, RegimeEntry]
    cache_computations: dict[str, int]
    versions: dict[str, str]
    runs: tuple[Run, ...]
    extensions: tuple[Extension, ...] = ()
    # The tables are sealed: a sweep stripped of every seal is then refused, not taken for
    # one an older didray wrote without seals (docs/design.md §3.3, `files.has_seals`).
    sealed: bool = False


def read_manifest(sweep_dir: Path) -> Manifest | None:
    """The manifest of `sweep_dir` (None when the sweep wrote none yet). One an older didray
    wrote is refused: its trial state cannot be resumed or extended."""
    path = sweep_dir / "manifest.json"
    data = manifest_json(path)
    if not data:
        return None
    if (version := data.get("version", 1)) != MANIFEST_VERSION:
        raise SweepStateError(
            f"{sweep_dir} was written by an older didray (manifest version {version}, this "
            f"one writes {MANIFEST_VERSION}); its trial state cannot be resumed. Its results "
            "stay readable by `didray analyze`; run the sweep anew under another `name` or "
            "`storage`")
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in err.errors())
        raise BadInput(f"{path}: not a didray manifest ({problems}); the file is corrupt, "
                       "restore it from a copy") from None


def write_manifest(manifest: Manifest, storage: Storage, sweep_dir: Path) -> None:
    write_json(manifest.model_dump(mode="json"), sweep_dir / "manifest.json")
    storage.push(sweep_dir / "manifest.json")


def versions() -> dict[str, str]:
    names = ("didray", "ray", "torch", "transformers", "datasets", "polars", "pydantic")
    return {n: importlib.metadata.version(n) for n in names}


def manifest_of(sweep: Sweep, source: str, prepared: PreparedSweep, overrides: Sequence[str],
                counts: Mapping[str, int], runs: Sequence[Run],
                extensions: Sequence[Extension], sealed: bool = True) -> Manifest:
    """The manifest of a run: `sweep` is `source` (the file's text) with `overrides` applied;
    `sealed` unless it continues a sweep an older didray wrote without seals."""
    return Manifest(
        version=MANIFEST_VERSION, sweep=sweep.model_dump(mode="json"), sweep_file=source,
        overrides=tuple(overrides), world_hash=prepared.world_hash,
        sampler_backend=resolve_backend(sweep.sampler.backend),
        world_dir=prepared.world_dir, enum_file=prepared.enum_file,
        eval_file=prepared.eval_file,
        regimes={n: RegimeEntry(data_hash=r.data_hash, ref_hash=r.ref_hash, pairs=r.n_pairs,
                                data_dir=r.data_dir, ref_file=r.ref_file)
                 for n, r in prepared.regimes.items()},
        cache_computations=dict(counts), versions=versions(), runs=tuple(runs),
        extensions=tuple(extensions), sealed=sealed)


@dataclass(frozen=True)
class Found:
    """What the driver found where the sweep's results go."""
    latest: bool = False  # the latest Tune experiment's directory exists
    restorable: bool = False  # and Tune can restore it
    remote: bool = False  # the storage is a URI


@dataclass(frozen=True)
class Plan:
    """What a run does: the Tune experiment it runs, restored from its saved state or not."""
    extensions: tuple[Extension, ...]  # the recorded ones, and this run's new one
    resume: bool

    @property
    def dir(self) -> str:
        return latest_dir(self.extensions)

    @property
    def points(self) -> tuple[dict, ...] | None:
        """The search points of an extension; None for the base grid (the sweep's space)."""
        return self.extensions[-1].points if self.extensions else None


def latest_dir(extensions: Sequence[Extension]) -> str:
    """The sweep's latest Tune experiment: tune/, or the last extension's tune-<n>/."""
    return extensions[-1].dir if extensions else BASE


def recorded(manifest: Manifest | None) -> tuple[Extension, ...]:
    return manifest.extensions if manifest else ()


def check_rerun(sweep_dir: Path, ran: bool, resume: bool, extend: bool) -> None:
    """Refuse a rerun over results without --resume, and an extension of nothing: checked
    before the manifest is read, as a rerun is refused whoever wrote it."""
    if ran and not (resume or extend):
        raise SweepStateError(
            f"{sweep_dir} already holds results of a sweep; pass --resume to continue it, or "
            "change `name` or `storage` to start a new one (nothing was changed)")
    if extend and not ran:
        raise SweepStateError(f"{sweep_dir} holds no sweep to extend; run it without --extend")


def check_private(sweep_dir: Path) -> None:
    """Refuse to continue a local sweep whose Tune state others could have written: --resume
    unpickles it (tuner.pkl, the experiment and search-generator state), which runs whatever
    code it holds, and --extend adds an experiment that --resume will unpickle (docs/design.md
    §3.3). Checked: the sweep directory, its Tune experiment directories, their files."""
    if not sweep_dir.is_dir():
        return
    tunes = tune_dirs(sweep_dir)
    for path in [sweep_dir, *tunes, *(f for d in tunes for f in sorted(d.iterdir()))]:
        if why := writers(path):
            raise SweepStateError(
                f"{path} {why}. --resume and --extend continue from Tune's saved state, which "
                "is loaded by unpickling: that runs any code the files hold, so results others "
                f"can write are refused (nothing was changed). Make them yours alone with "
                f"`chmod -R go-w {sweep_dir}` (and `chown -R` them to you if another user owns "
                "them), then run again")


def check_tune_state(sweep_dir: Path, tune_dir: Path) -> None:
    """Refuse, before Ray starts, to resume the Tune experiment `tune_dir` from state that
    cannot be read: Tune would stop on it with a traceback once trials were scheduled (random
    bytes in tuner.pkl: "unregistered extension code"; a truncated experiment state: a
    KeyError), after the manifest had recorded a run (docs/design.md §3.3)."""
    if problem := tune_damage(tune_dir):
        raise SweepStateError(
            f"{problem}: the Tune state --resume continues from is damaged (a full disk, a "
            "copy cut short, an edit). The finished trials' results in "
            f"{sweep_dir} (trials.parquet, steps.parquet, evals.parquet, steps/, evals/, done/ "
            "and the trials' checkpoints) are intact and `didray analyze` reads them. Restore "
            f"{tune_dir} from a copy of the sweep and resume again, or run the sweep anew "
            "under another `name`, which reuses its caches (nothing was changed)")


def tune_damage(tune_dir: Path) -> str | None:
    """Which file of the Tune experiment `tune_dir` Tune could not read on restore, and why;
    None when each reads (or there is no experiment yet: nothing to restore)."""
    import ray.cloudpickle as cloudpickle

    if not tune_dir.is_dir():
        return None
    states = sorted(tune_dir.glob("experiment_state-*.json"))  # Tune restores the newest
    if not states:
        return f"{tune_dir} holds no experiment_state-*.json"
    loads = [(tune_dir / "tuner.pkl", cloudpickle.loads), (states[-1], experiment_state),
             *((p, cloudpickle.loads) for p in sorted(tune_dir.glob("basic-variant-state-*")))]
    for path, load in loads:
        try:
            load(path.read_bytes())
        except Exception as err:  # damaged pickles raise any type at all
            reason = str(err).strip().splitlines()[:1]
            return f"{path} cannot be read ({': '.join([type(err).__name__, *reason])})"
    return None


def experiment_state(data: bytes) -> dict:
    """Tune's experiment state as its restore reads it: JSON with these two entries."""
    state = json.loads(data)
    return {key: state[key] for key in ("trial_data", "runner_data")}


def tune_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's Tune experiment directories: tune/ and its extensions' tune-<n>/."""
    return [d for d in [sweep_dir / BASE, *sorted(sweep_dir.glob(f"{BASE}-*"))] if d.is_dir()]


def writers(path: Path) -> str | None:
    """Who besides its owner can change `path` (the file a symlink names), in words; None if
    no one."""
    info = path.stat()
    if info.st_uid != os.geteuid():  # who the process writes as
        return f"is owned by another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by its group or by others (mode {stat.filemode(info.st_mode)})"
    return None


def plan(manifest: Manifest | None, sweep: Sweep, sweep_dir: Path, found: Found,
         resume: bool = False, extend: bool = False, overrides: Sequence[str] = ()) -> Plan:
    """What this run does (once `check_rerun` passed), or a SweepStateError for what would mix
    or overwrite results: a resume whose sweep (file and overrides, compared once resolved)
    differs from the one the results came from, a moved URI sweep, or an extension of a sweep
    that has not finished."""
    latest = sweep_dir / latest_dir(recorded(manifest))
    if resume and found.latest and not found.restorable:
        raise SweepStateError(f"{latest} has no restorable Tune state")
    written_to = manifest.sweep.get("storage") if manifest else None
    if (resume or extend) and found.remote and written_to not in (None, sweep.storage):
        raise SweepStateError(
            f"{sweep.storage} holds a sweep written to {written_to}: a sweep on a URI storage "
            "resumes or extends where it was written (Tune's saved state names that place); "
            "run it with the storage it was written to")
    if extend and not (manifest and manifest.runs and manifest.runs[-1].status == "finished"):
        raise SweepStateError(f"{sweep_dir}'s last run did not finish; finish it with --resume "
                              "(its recorded sweep file and overrides), then --extend")
    if resume and (change := sweep_change(manifest, sweep, overrides)):
        raise SweepStateError(
            f"{sweep_dir} was written by a different sweep file or overrides ({change}); "
            "--resume continues the original sweep only. Use a new `name` for the new one")
    if extend:
        return Plan((*recorded(manifest), extension(sweep, manifest)), resume=False)
    return Plan(recorded(manifest), resume=resume and found.latest)  # nothing to restore: afresh


def sweep_change(manifest: Manifest | None, sweep: Sweep, overrides: Sequence[str]) -> str | None:
    """What differs between the resolved sweep in `manifest` and `sweep` (file and overrides
    both resolved, so `train.lr=2e-3` resumes a sweep run with `train.lr=0.002`); None if
    nothing does. The storage path may differ: a moved sweep resumes in its new place."""
    now = sweep.model_dump(mode="json")
    if manifest is None or {**manifest.sweep, "storage": None} == {**now, "storage": None}:
        return None
    then = " ".join(manifest.overrides) or "none"
    return (f"changed: {', '.join(changed_fields(manifest, now, 'storage'))}; overrides then: "
            f"{then}, now: {' '.join(overrides) or 'none'}")


def changed_fields(manifest: Manifest, now: dict, *ignored: str) -> list[str]:
    """The top-level fields of the sweep (as JSON) that differ from the recorded one."""
    return sorted(k for k in now if k not in ignored and manifest.sweep.get(k) != now[k])


def extension(sweep: Sweep, manifest: Manifest) -> Extension:
    """The next Tune experiment of `--extend`: the search points of `sweep` that the recorded
    sweep did not have. Refused unless the sweep file differs only in its search axes, every
    recorded point is kept and one at least is new."""
    if changed := changed_fields(manifest, sweep.model_dump(mode="json"), "storage", "search"):
        raise SweepStateError(f"--extend adds search values only; the sweep also changed: "
                              f"{', '.join(changed)} (nothing was changed)")
    old = parse_sweep(manifest.sweep)
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
    return Extension(dir=f"tune-{len(manifest.extensions) + 2}", points=tuple(new))


def sealed(manifest: Manifest | None, sweep_dir: Path) -> bool:
    """Whether the sweep's tables are sealed: a new sweep's are, and so are those of a sweep
    sealed before; an older didray's unsealed tables stay readable until rewritten sealed."""
    return manifest is None or manifest.sealed or has_seals(sweep_dir)


def cache_counts(manifest: Manifest | None, computed: Mapping[str, int]) -> dict[str, int]:
    """Cache computations over every run: a resumed sweep still shows each cache computed
    once."""
    counts = dict(manifest.cache_computations if manifest else {})
    for key, n in computed.items():
        counts[key] = counts.get(key, 0) + n
    return counts


def runs_with(manifest: Manifest | None, run: Run) -> tuple[Run, ...]:
    return (*(manifest.runs if manifest else ()), run)


def ended(run: Run, statuses: Sequence[str], trials: int, errors: int,
          spent: Mapping[str, float], now: float) -> Run:
    """`run` once Tune returned: finished if every one of the sweep's `trials` ended (STOPPED,
    cut short by the scheduler, counts as ended), else interrupted."""
    done = sum(map(statuses.count, ("TERMINATED", "ERROR", "STOPPED")))
    return run.model_copy(update={
        "trials_s": now - run.started - run.prepare_s, "total_s": now - run.started,
        "errors": errors, "trial_seconds": dict(spent),
        "status": "finished" if done == trials else "interrupted"})
