"""End-to-end sweeps on a real local Ray (slow: each starts Ray and Tune): refusals, kills and
resumes, moves, lost trainers, DDP. They start from the CI sweep's warm cache (support.sweeps
.warm) unless they test building it."""

import json
import math
import shlex
import shutil
import signal
from pathlib import Path

import polars as pl
import ray
from support.sweeps import (
    CI,
    ROOT,
    assert_same_results,
    comparable,
    kill_trainer,
    one_trial_sweep,
    run_cli,
    run_here,
    warm,
    write_sweep,
)

from didray.cli import main
from didray.sweep.lock import LOCK


def test_rerun_without_resume_is_refused_and_keeps_results(ci_sweep, capsys):
    _, out = ci_sweep
    before = (out / "trials.parquet").read_bytes()
    assert run_here(["run", str(ROOT / "sweeps/ci.yaml"), "--storage", str(out.parent)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (out / "trials.parquet").read_bytes() == before


def test_an_ask_no_node_can_hold_is_refused_before_anything_starts(tmp_path, capsys):
    path = write_sweep(tmp_path, {**CI, "scaling": {**CI["scaling"], "cpus_per_worker": 64}})
    assert main(["run", str(path), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "a Train worker (scaling.cpus_per_worker, gpus_per_worker) asks for 64 CPU" in err
    assert not ray.is_initialized() and not (tmp_path / "ci").exists()


def test_resume_with_a_changed_sweep_file_is_refused(ci_sweep, tmp_path, capsys):
    _, out = ci_sweep
    path = write_sweep(tmp_path, {**CI, "train": {**CI["train"], "lr": 0.5}})
    assert run_here(["run", str(path), "--storage", str(out.parent), "--resume"]) == 2
    assert "changed: train" in capsys.readouterr().err


# The CI sweep's two pg trials, one at a time.
TWO_PG_TRIALS = {**CI, "search": {"beta": [0.1, 0.5], "regime": ["pg"]},
                 "scaling": {**CI["scaling"], "max_concurrent_trials": 1}}


def test_driver_killed_between_trials_resumes_to_the_uninterrupted_results(
        ci_sweep, warm_cache, tmp_path):
    """kill -9 of `didray run` once the first trial has finished; `--resume` then finishes
    with exactly the results of a run that was never interrupted, the finished trial not
    trained again. (A kill while a trial trains: `test_moved_sweep_resumes_in_its_new_place`,
    which also moves the sweep before resuming it.)"""
    _, clean = ci_sweep
    path = write_sweep(tmp_path, TWO_PG_TRIALS)
    args = ["run", str(path), "--storage", str(warm(tmp_path, warm_cache))]

    code, first, _ = run_cli(args, kill_after="finished")
    assert code == -signal.SIGKILL, first
    done = [line.split()[2] for line in first.splitlines() if line.endswith("finished")]
    assert done, first

    code, second, _ = run_cli([*args, "--resume"])
    assert code == 0, second
    # A finished trial trains no step again (Tune may restart it if the kill came before it
    # saved its state; the trial then reports its results from disk).
    trained = [line.split()[1] for line in second.splitlines() if " step " in line]
    assert not set(done) & set(trained), (done, trained)
    assert_resumed_to(tmp_path / "ci", clean)


def assert_resumed_to(out: Path, clean: Path) -> None:
    """The two-trial sweep at `out`, killed once and resumed, has the clean run's results,
    no error, and computed no cache entry in either run."""
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.height == 2 and set(trials["status"]) == {"TERMINATED"}
    assert "error" not in trials.columns or trials["error"].null_count() == 2
    assert_same_results(out, clean)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["cache_computations"].values()) == {0}  # all warm, in both runs
    assert [r["resumed"] for r in manifest["runs"]] == [False, True]


def test_driver_killed_in_prepare_resumes_to_the_uninterrupted_results(ci_sweep, tmp_path):
    """kill -9 of `didray run` while prepare computes the reference log-probs (pi_ref and
    the regime's dataset built, no Tune state yet): `--resume` starts the sweep, reuses what
    prepare had finished, computes the rest and ends with the clean run's results. (About
    building caches: it starts from an empty storage.)"""
    _, clean = ci_sweep
    args = one_trial_sweep(tmp_path)
    code, first, _ = run_cli(args, kill_after="data: reference log-probs")
    assert code == -signal.SIGKILL, first
    assert not (tmp_path / "ci" / "tune").exists()

    code, second, _ = run_cli([*args, "--resume"])
    assert code == 0, second
    assert "(cached)" in second and "data: building regime" not in second, second
    assert "data: reference log-probs" in second, second
    assert_same_results(tmp_path / "ci", clean)


def test_driver_killed_in_final_evaluation_resumes_to_the_uninterrupted_results(
        ci_sweep, warm_cache, tmp_path):
    """kill -9 of `didray run` as soon as the trial says its last step trained and its final
    evaluation began; `--resume` finishes with the clean run's results."""
    _, clean = ci_sweep
    args = one_trial_sweep(warm(tmp_path, warm_cache))
    code, first, _ = run_cli(args, kill_after="6/6: final evaluation")
    assert code == -signal.SIGKILL, first
    # The window was hit: the last report (it carries the final evaluation, which takes
    # seconds here where a step takes milliseconds) never reached the driver.
    assert " step 6/6 loss" not in first, first

    code, second, _ = run_cli([*args, "--resume"])
    assert code == 0, second
    assert_same_results(tmp_path / "ci", clean)


TUNE_TABLE = ("== Status ==", "Current time:")  # Tune's trial table (its CLIReporter)


def test_sigterm_stops_the_sweep_and_its_ray_then_its_hint_finishes(warm_cache, tmp_path):
    """SIGTERM: exit 130, no Ray process left, the driver's lease released, and the printed
    command, followed as printed, continues this sweep (its storage and overrides kept).
    Tune's trial table is off by default and printed with -v, on the resumed run too (its
    restored Tune state was saved without it)."""
    args = [*one_trial_sweep(warm(tmp_path, warm_cache)), "train.lr=0.01"]
    code, log, leftovers = run_cli(args, kill_after="step 2/6", kill=lambda p: p.terminate(),
                                   stdout=True)
    assert code == 130, log
    assert leftovers == [], leftovers
    assert not any(line in log for line in TUNE_TABLE), log
    assert not (tmp_path / "ci" / LOCK).exists()
    hint = shlex.split(log.split("continue with `")[1].split("`")[0])
    assert hint == ["didray", "run", args[1], "train.lr=0.01", "--storage", str(tmp_path),
                    "--resume"]
    code, log, _ = run_cli([*hint[1:], "-v"], stdout=True)
    assert code == 0, log
    assert all(line in log for line in TUNE_TABLE), log
    trials = pl.read_parquet(tmp_path / "ci" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"] and trials["step"].to_list() == [6]


def move_interrupted_sweep(tmp_path: Path, cache: Path, scaling: dict) -> tuple[Path, Path]:
    """The CI sweep's two pg trials, one at a time, with `scaling`: its driver killed in the
    first trial, the sweep moved (its old storage gone) to a storage holding the same cache
    entries, and resumed in its new place. Returns the new results directory and the old
    storage."""
    path = write_sweep(tmp_path, {
        **TWO_PG_TRIALS, "scaling": {**TWO_PG_TRIALS["scaling"], **scaling}})
    old, new = tmp_path / "old", tmp_path / "new"
    warm(old, cache)
    code, log, _ = run_cli(["run", str(path), "--storage", str(old)], kill_after="step 2/6")
    assert code == -signal.SIGKILL, log
    shutil.move(old / "ci", warm(new, cache) / "ci")
    shutil.rmtree(old)
    code, log, _ = run_cli(["run", str(path), "--storage", str(new), "--resume"])
    assert code == 0, log
    return new / "ci", old


def test_moved_sweep_resumes_in_its_new_place(ci_sweep, warm_cache, tmp_path):
    """kill -9 of `didray run` while the first trial trains, the sweep moved elsewhere:
    `--resume` writes only in the new place and finishes with the uninterrupted results."""
    _, clean = ci_sweep
    out, old = move_interrupted_sweep(tmp_path, warm_cache, {})
    assert not old.exists()
    assert_resumed_to(out, clean)


def test_moved_sweep_of_train_runs_creates_its_later_trials_in_the_new_place(warm_cache,
                                                                             tmp_path):
    """Two-worker trials run as Ray Train runs, and Tune holds them back (its concurrency
    limit), so the second trial is first created after the restore: it too runs and writes
    in the new place (Tune's saved generator held the old one)."""
    out, old = move_interrupted_sweep(tmp_path, warm_cache, {"workers_per_trial": 2})
    assert not old.exists()
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.sort("beta")["beta"].to_list() == [0.1, 0.5]
    assert set(trials["status"]) == {"TERMINATED"} and set(trials["step"]) == {6}
    steps = pl.read_parquet(out / "steps.parquet")
    assert sorted(steps["step"].to_list()) == [0, 0, 2, 2, 4, 4, 6, 6]
    assert set(steps["workers"]) == {2}


EXACT_STEP_METRICS = ("did/entropy", "eval/instruction_score", "eval/qa_accuracy")


def test_eval_every_evaluates_every_second_report_and_the_last_step(ci_sweep, warm_cache,
                                                                    tmp_path):
    """eval.every: 2 with reports at steps 2, 4 and 6: the exact evaluation runs at 4 and at
    the last step only (pi_ref's at step 0), step 2 carries none. Skipping it changes no
    training, so every other value, the final evaluation and the trial's results equal the
    every-report run's."""
    _, clean = ci_sweep
    path = write_sweep(tmp_path, {**CI, "search": {"beta": [0.1], "regime": ["pg"]},
                                  "eval": {"every": 2}})
    assert run_here(["run", str(path), "--storage", str(warm(tmp_path, warm_cache))]) == 0
    out = tmp_path / "ci"
    steps = comparable(out, "steps")
    assert steps["step"].to_list() == [0, 2, 4, 6]
    for name in EXACT_STEP_METRICS:
        assert steps[name].is_null().to_list() == [False, True, False, False], name
    want = comparable(clean, "steps").filter(pl.col("beta") == 0.1, pl.col("regime") == "pg")
    evaluated = pl.col("step") != 2
    want = want.with_columns(pl.when(evaluated).then(pl.col(c)).alias(c)
                             for c in EXACT_STEP_METRICS)
    assert steps.equals(want.select(steps.columns))
    assert_same_results(out, clean, tables=("trials", "evals"))
    trial = pl.read_parquet(out / "trials.parquet")
    assert trial["did_entropy"].to_list() == want.filter(pl.col("step") == 6)[
        "did/entropy"].to_list()


def test_lost_trainer_restarts_from_its_checkpoint(ci_sweep, warm_cache, tmp_path):
    """The process training the trial killed after step 2: Ray restarts the trial from the
    step-2 checkpoint by itself, the sweep exits 0 and its results equal the clean run's."""
    _, clean = ci_sweep
    code, log, _ = run_cli(one_trial_sweep(warm(tmp_path, warm_cache)), kill_after="step 2/6",
                           kill=kill_trainer)
    assert code == 0, log
    assert_same_results(tmp_path / "ci", clean)


def test_two_ddp_workers_train_one_trial(warm_cache, tmp_path, monkeypatch):
    path = write_sweep(tmp_path, {
        **CI, "name": "ddp", "search": {"beta": [0.1], "regime": ["pg"]},
        "train": {**CI["train"], "steps": 4, "report_every": 2},
        "scaling": {"workers_per_trial": 2, "cpus_per_worker": 1, "max_concurrent_trials": 1}},
        name="ddp.yaml")
    # A relative storage path, as in the shipped sweep files: Ray workers run elsewhere, so
    # the driver must hand them absolute paths.
    monkeypatch.chdir(warm(tmp_path, warm_cache))
    assert run_here(["run", str(path), "--storage", "."]) == 0
    steps = pl.read_parquet(tmp_path / "ddp" / "steps.parquet").sort("step")
    assert steps["step"].to_list() == [0, 2, 4]  # step 0: pi_ref, written by rank 0
    assert steps["workers"].to_list() == [2, 2, 2]
    trials = pl.read_parquet(tmp_path / "ddp" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"]
    assert trials["dpo_loss"][0] < math.log(2)
