"""The sweep state without Ray: manifests written into tmp_path, sweeps from sweeps/ci.yaml,
and the start / resume / moved-sweep / extend decisions of didray.sweep.state."""

import json
from pathlib import Path

import pytest

from didray.config.load import load_sweep
from didray.errors import BadInput
from didray.storage import Storage
from didray.sweep.state import (
    Extension,
    Found,
    Manifest,
    Plan,
    RegimeEntry,
    Run,
    cache_counts,
    check_rerun,
    ended,
    extension,
    plan,
    read_manifest,
    sealed,
    write_manifest,
)

CI = Path(__file__).parents[2] / "sweeps/ci.yaml"
RUN = ["train.lr=0.002", "search.seed=[0,1]"]
RESTORABLE = Found(latest=True, restorable=True)
FINISHED = Run(started=100.0, resumed=False, extended=False, prepare_s=2.0, status="finished",
               trials_s=30.0, total_s=32.0, errors=0, trial_seconds={"time/train_s": 12.5})


def sweep(*overrides: str, storage: str = "/results"):
    return load_sweep(CI, overrides).model_copy(update={"storage": storage})


def manifest(overrides=(), runs=(FINISHED,), extensions=(), storage="/results") -> Manifest:
    """The manifest of sweeps/ci.yaml run with `overrides` into `storage`."""
    return Manifest(
        version=2, sweep=sweep(*overrides, storage=storage).model_dump(mode="json"),
        sweep_file=CI.read_text(), overrides=tuple(overrides), world_hash="w0",
        sampler_backend="torch", world_dir=Path("/results/cache/toy/w0"), eval_file=None,
        regimes={"pg": RegimeEntry(data_hash="d1", ref_hash="r1", pairs=32,
                                   data_dir=Path("/results/cache/data/d1"),
                                   ref_file=Path("/results/cache/ref/r1.safetensors"))},
        cache_computations={"pi_ref/w0": 1, "data/d1": 1}, versions={"didray": "0.1.0"},
        runs=tuple(runs), extensions=tuple(extensions))


def points(added: Extension | Plan) -> list[tuple]:
    return [(p["beta"], p["regime"], p["seed"]) for p in added.points]


# ------------------------------------------------------------------ start and resume


def test_a_rerun_without_resume_is_refused(tmp_path):
    with pytest.raises(BadInput, match=f"^{tmp_path} already holds results of a sweep; pass "
                                       r"--resume to continue it, or change `name`"):
        check_rerun(tmp_path, ran=True, resume=False, extend=False)
    with pytest.raises(BadInput, match="holds no sweep to extend; run it without --extend"):
        check_rerun(tmp_path, ran=False, resume=False, extend=True)
    check_rerun(tmp_path, ran=True, resume=True, extend=False)
    check_rerun(tmp_path, ran=False, resume=True, extend=False)  # nothing there: afresh


def test_a_resume_of_a_changed_sweep_is_refused_naming_the_change(tmp_path):
    with pytest.raises(BadInput) as err:
        plan(manifest(RUN), sweep("train.lr=0.002"), tmp_path, RESTORABLE, resume=True,
             overrides=["train.lr=0.002"])
    assert str(err.value) == (
        f"{tmp_path} was written by a different sweep file or overrides (changed: search; "
        "overrides then: train.lr=0.002 search.seed=[0,1], now: train.lr=0.002); --resume "
        "continues the original sweep only. Use a new `name` for the new one")


def test_a_resume_with_equivalent_overrides_restores_the_base_experiment(tmp_path):
    same = ["train.lr=2e-3", "search.seed=[0, 1]"]
    todo = plan(manifest(RUN), sweep(*same), tmp_path, RESTORABLE, resume=True, overrides=same)
    assert (todo.dir, todo.points, todo.resume, todo.extensions) == ("tune", None, True, ())


def test_a_resume_with_no_saved_tune_state_starts_afresh_and_a_damaged_one_is_refused(
        tmp_path):
    todo = plan(manifest(), sweep(), tmp_path, Found(latest=False), resume=True)
    assert (todo.dir, todo.resume) == ("tune", False)
    with pytest.raises(BadInput, match=f"^{tmp_path}/tune has no restorable Tune state$"):
        plan(manifest(), sweep(), tmp_path, Found(latest=True, restorable=False), resume=True)


def test_a_moved_local_sweep_resumes_in_its_new_place(tmp_path):
    todo = plan(manifest(storage="/old/place"), sweep(storage=str(tmp_path)), tmp_path / "ci",
                RESTORABLE, resume=True)
    assert (todo.dir, todo.resume) == ("tune", True)


def test_a_moved_uri_sweep_is_refused_and_one_in_place_resumes(tmp_path):
    written = manifest(storage="s3://bucket/old")
    with pytest.raises(BadInput) as err:
        plan(written, sweep(storage="s3://bucket/new"), tmp_path,
             Found(latest=True, restorable=True, remote=True), resume=True)
    assert str(err.value).startswith(
        "s3://bucket/new holds a sweep written to s3://bucket/old: a sweep on a URI storage "
        "resumes or extends where it was written")
    todo = plan(written, sweep(storage="s3://bucket/old"), tmp_path,
                Found(latest=True, restorable=True, remote=True), resume=True)
    assert todo.resume


# ------------------------------------------------------------------ the file


def test_an_older_manifest_version_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"sweep": {"name": "ci"}, "runs": []}))
    with pytest.raises(BadInput, match=r"written by an older didray \(manifest version 1, "
                                       r"this one writes 2\); its trial state cannot be "):
        read_manifest(tmp_path)


def test_no_manifest_reads_as_none(tmp_path):
    assert read_manifest(tmp_path) is None
    assert cache_counts(None, {"data/d1": 1}) == {"data/d1": 1}


def test_a_manifest_round_trips_to_the_same_json(tmp_path):
    """The file as the driver wrote it before Manifest existed: same keys, same order, the
    running run without the keys of an ended one."""
    running = {"started": 140.5, "resumed": True, "extended": True, "prepare_s": 1.5,
               "status": "running"}
    written = {**manifest(RUN).model_dump(mode="json"),
               "runs": [FINISHED.model_dump(mode="json"), running],
               "extensions": [{"dir": "tune-2", "points": [
                   {"beta": 1.0, "regime": "pg", "seed": 0}]}]}
    assert list(written) == [
        "version", "sweep", "sweep_file", "overrides", "world_hash", "sampler_backend",
        "world_dir", "enum_file", "eval_file", "regimes", "cache_computations", "versions",
        "runs", "extensions", "sealed"]
    assert list(written["runs"][0]) == [*running, "trials_s", "total_s", "errors",
                                        "trial_seconds"]
    text = json.dumps(written, indent=2)
    (tmp_path / "manifest.json").write_text(text)
    read = read_manifest(tmp_path)
    assert read.runs[1] == Run(**running) and read.extensions[0].dir == "tune-2"
    write_manifest(read, Storage.of(tmp_path), tmp_path)
    assert (tmp_path / "manifest.json").read_text() == text


def test_a_manifest_missing_a_field_is_named(tmp_path):
    data = manifest().model_dump(mode="json")
    del data["runs"], data["regimes"]["pg"]["ref_hash"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BadInput, match=r"manifest.json: not a didray manifest \(regimes.pg."
                                       r"ref_hash: Field required; runs: Field required\)"):
        read_manifest(tmp_path)


def test_a_manifest_is_frozen():
    with pytest.raises(ValueError, match="frozen"):
        manifest().world_hash = "other"


# ------------------------------------------------------------------ extend


def test_extending_an_unfinished_sweep_is_refused(tmp_path):
    cut = FINISHED.model_copy(update={"status": "interrupted"})
    for written in (manifest(runs=[FINISHED, cut]), None):
        with pytest.raises(BadInput, match=f"^{tmp_path}'s last run did not finish; finish "
                                           "it with --resume"):
            plan(written, sweep("search.seed=[0,1]"), tmp_path, RESTORABLE, extend=True)


def test_extend_refuses_anything_but_added_search_values():
    with pytest.raises(BadInput, match=r"^--extend adds search values only; the sweep also "
                                       r"changed: data, train \(nothing was changed\)$"):
        extension(sweep("train.lr=0.5", "data.seed=3", "search.seed=[0,1]"), manifest())
    with pytest.raises(BadInput, match="^--extend keeps every search point run so far; 2 of "
                                       "them are missing from the sweep"):
        extension(sweep("search.beta=[0.1,1.0]"), manifest())
    with pytest.raises(BadInput, match="^--extend: the sweep adds no search point"):
        extension(sweep(storage="/moved"), manifest())
    with pytest.raises(BadInput, match="a random search cannot be extended"):
        extension(sweep("search.mode=random"), manifest())


def test_extend_runs_only_the_new_points_in_the_next_tune_dir(tmp_path):
    first = extension(sweep("search.beta=[0.1,0.5,1.0]"), manifest())
    assert (first.dir, points(first)) == ("tune-2", [(1.0, "pg", 0), (1.0, "powerlaw-t1", 0)])
    grown = manifest(overrides=["search.beta=[0.1,0.5,1.0]"], extensions=[first])
    todo = plan(grown, sweep("search.beta=[0.1,0.5,1.0]", "search.seed=[0,1]"), tmp_path,
                RESTORABLE, extend=True)
    assert (todo.dir, todo.resume, todo.extensions[0]) == ("tune-3", False, first)
    assert points(todo) == [(b, r, 1) for b in (0.1, 0.5, 1.0) for r in ("pg", "powerlaw-t1")]


def test_a_resume_after_a_cut_extension_restores_its_experiment(tmp_path):
    added = extension(sweep("search.seed=[0,1]"), manifest())
    cut = FINISHED.model_copy(update={"status": "interrupted", "extended": True})
    written = manifest(["search.seed=[0,1]"], runs=[FINISHED, cut], extensions=[added])
    todo = plan(written, sweep("search.seed=[0,1]"), tmp_path, RESTORABLE, resume=True,
                overrides=["search.seed=[0,1]"])
    assert (todo.dir, todo.resume, todo.points) == ("tune-2", True, added.points)
    assert len(todo.points) == 4


# ------------------------------------------------------------------ runs and counts


def test_the_manifest_records_sealed_tables_unless_an_older_sweep_is_continued(tmp_path):
    older = manifest()  # written before the manifest recorded sealing: no `sealed` key
    assert not older.sealed and not sealed(older, tmp_path)  # its unsealed tables stay readable
    (tmp_path / "trials.parquet.integrity.json").write_text("[1, \"ab\"]")
    assert sealed(older, tmp_path)  # once rewritten sealed, it is a sealed sweep
    assert sealed(None, tmp_path / "new")
    assert sealed(older.model_copy(update={"sealed": True}), tmp_path / "new")


def test_cache_counts_add_up_over_runs():
    assert cache_counts(manifest(), {"data/d1": 0, "ref/r2": 1}) == {
        "pi_ref/w0": 1, "data/d1": 1, "ref/r2": 1}


def test_an_ended_run_is_finished_only_when_every_trial_ended():
    run = Run(started=100.0, resumed=False, prepare_s=2.0, status="running")
    done = ended(run, ["TERMINATED", "STOPPED", "ERROR", "TERMINATED"], 4, 1,
                 {"time/train_s": 3.0}, now=150.0)
    assert done.model_dump() == {
        "started": 100.0, "resumed": False, "extended": False, "prepare_s": 2.0,
        "status": "finished", "trials_s": 48.0, "total_s": 50.0, "errors": 1,
        "trial_seconds": {"time/train_s": 3.0}}
    assert ended(run, ["TERMINATED", "RUNNING", "PENDING"], 4, 0, {}, 150.0).status == (
        "interrupted")
