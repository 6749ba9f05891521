"""End-to-end sweeps on a real local Ray (slow: each Train run costs ~10-30 s of start-up)."""

import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import psutil
import pytest
import ray
import yaml

from didray import metrics
from didray.analysis import load
from didray.cli import main

ROOT = Path(__file__).parents[2]
CI = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())
pytestmark = pytest.mark.slow


def test_ci_sweep_writes_one_finished_row_per_trial(ci_sweep):
    code, out = ci_sweep
    assert code == 0
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.height == 4
    assert set(trials["status"]) == {"TERMINATED"}
    assert sorted(zip(trials["beta"], trials["regime"], strict=True)) == [
        (0.1, "pg"), (0.1, "powerlaw-t1"), (0.5, "pg"), (0.5, "powerlaw-t1")]
    for column in ("did_entropy", "instruction_score", "instruction_winrate", "qa_accuracy",
                   "chosen_displacement", "rejected_displacement", "dpo_loss", "final/loss",
                   "regime_kind", "tau", "beta_data", "seed", "node_id"):
        assert column in trials.columns, column
    # Exact DID entropy over 819 responses lies in [0, log 819].
    assert trials["did_entropy"].is_between(0, math.log(819)).all()


def test_ci_sweep_steps_and_training_lowers_the_loss(ci_sweep):
    _, out = ci_sweep
    steps = pl.read_parquet(out / "steps.parquet")
    assert steps.height == 4 * 4  # pi_ref (step 0), then reports at steps 2, 4, 6 of every trial
    assert sorted(set(steps["step"])) == [0, 2, 4, 6]
    trials = pl.read_parquet(out / "trials.parquet")
    # Every policy starts at pi_ref, where the whole-dataset DPO loss is exactly log 2.
    assert (trials["dpo_loss"] < math.log(2)).all(), trials["dpo_loss"]


def test_steps_start_at_pi_ref(ci_sweep):
    """Step 0 is pi_ref before any update: its reward margin and accuracy are 0 and its
    sigmoid loss log 2 by construction, its DID distribution is uniform over the 819
    responses, and nothing in it depends on the training beta."""
    _, out = ci_sweep
    steps = pl.read_parquet(out / "steps.parquet").filter(pl.col("step") == 0)
    assert steps.height == 4
    assert steps["loss"].to_list() == pytest.approx([math.log(2)] * 4)
    assert steps["rewards/margins"].to_list() == steps["rewards/accuracies"].to_list() == [0] * 4
    assert steps["did/entropy"].to_list() == pytest.approx([math.log(819)] * 4, abs=1e-5)
    assert steps["tokens_per_s"].is_null().all()  # no step trained
    by_regime = steps.group_by("regime").agg(pl.col(c).n_unique() for c in (
        "logps/chosen", "logps/rejected", "eval/instruction_score", "eval/qa_accuracy"))
    assert (by_regime.drop("regime") == 1).to_numpy().all()


def test_ci_sweep_stores_did_entropy_estimates_next_to_exact(ci_sweep):
    _, out = ci_sweep
    evals = pl.read_parquet(out / "evals.parquet")
    assert evals.height == 4 * 3 * 8  # trials x (estimator, proposal) x prompts
    assert set(evals["k"]) == {32}
    assert {"estimator", "proposal", "estimate", "spread_low", "spread_high", "exact",
            "trial_id", "beta", "regime"} <= set(evals.columns)
    assert (evals["spread_low"] <= evals["spread_high"]).all()
    trials = pl.read_parquet(out / "trials.parquet")
    # The per-prompt exact values average to the trial's exact DID entropy.
    exact = evals.filter(pl.col("estimator") == "plugin").group_by("trial_id").agg(
        pl.col("exact").mean())
    joined = trials.join(exact, on="trial_id")
    assert (joined["exact"] - joined["did_entropy"]).abs().max() < 1e-6
    # Toy: did_entropy is the exact value, named so; each estimate's mean names its K.
    assert trials["did_entropy"].equals(trials["did_entropy_exact"], check_names=False)
    assert set(trials["did_entropy_estimator"]) == {"exact"}
    snis = evals.filter(pl.col("estimator") == "snis", pl.col("proposal") == "ref").group_by(
        "trial_id").agg(pl.col("estimate").mean())
    joined = trials.join(snis, on="trial_id")
    assert (joined["estimate"] - joined["did_entropy_snis_ref_k32"]).abs().max() < 1e-12
    assert {"did_entropy_plugin_k32", "did_entropy_snis_policy_k32"} <= set(trials.columns)


def test_last_report_is_the_final_evaluation(ci_sweep):
    """One exact evaluation path: the trial's final numbers are its last report's."""
    _, out = ci_sweep
    last = pl.read_parquet(out / "steps.parquet").filter(pl.col("step") == 6)
    trials = pl.read_parquet(out / "trials.parquet").join(last, on="trial_id")
    assert trials.height == 4
    assert trials["did/entropy"].to_list() == trials["did_entropy"].to_list()
    assert trials["eval/qa_accuracy"].to_list() == trials["qa_accuracy"].to_list()
    assert trials["eval/instruction_score"].to_list() == trials["instruction_score"].to_list()


def test_load_keeps_every_column_the_sweep_wrote(ci_sweep):
    """The contract between what ResultsWriter and the trials write and what `load` reads:
    every written column is registered, and loads back with its values."""
    _, out = ci_sweep
    results = load(out)
    for name, frame in (("trials", results.trials), ("steps", results.steps)):
        written = pl.read_parquet(out / f"{name}.parquet")
        assert [c for c in written.columns if metrics.lookup(c) is None] == [], name
        loaded = frame.collect().sort("trial_id", *(["step"] if name == "steps" else []))
        written = written.sort("trial_id", *(["step"] if name == "steps" else []))
        assert loaded.select(written.columns).equals(written.cast(
            {c: loaded.schema[c] for c in written.columns})), name
    written = pl.read_parquet(out / "evals.parquet")
    assert [c for c in written.columns if metrics.lookup(c) is None] == []
    estimates = results.evals.filter(pl.col("estimator") != "exact").collect()
    key = ["trial_id", "estimator", "proposal", "prompt_id"]
    assert estimates.height == written.height
    assert estimates.sort(key).select(*key, "estimate").equals(
        written.sort(key).select(*key, "estimate"))
    assert sorted(set(estimates["prompt_id"])) == list(range(8))


def test_ci_sweep_computes_each_cache_once(ci_sweep):
    _, out = ci_sweep
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["cache_computations"]
    assert {key.split("/")[0] for key in counts} == {"pi_ref", "enumeration", "data", "ref"}
    assert sum(k.startswith("ref/") for k in counts) == 2  # one per regime, shared by 2 betas
    assert set(counts.values()) == {1}
    assert manifest["runs"][-1]["status"] == "finished"
    assert manifest["sweep"]["name"] == "ci"


def test_rerun_without_resume_is_refused_and_keeps_results(ci_sweep, capsys):
    _, out = ci_sweep
    before = (out / "trials.parquet").read_bytes()
    assert main(["run", str(ROOT / "sweeps/ci.yaml"), "--storage", str(out.parent)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert (out / "trials.parquet").read_bytes() == before


def test_an_ask_no_node_can_hold_is_refused_before_anything_starts(tmp_path, capsys):
    sweep = {**CI, "scaling": {**CI["scaling"], "cpus_per_worker": 64}}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(sweep))
    assert main(["run", str(path), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "a Train worker (scaling.cpus_per_worker, gpus_per_worker) asks for 64 CPU" in err
    assert not ray.is_initialized() and not (tmp_path / "ci").exists()


def test_resume_with_a_changed_sweep_file_is_refused(ci_sweep, tmp_path, capsys):
    _, out = ci_sweep
    changed = {**CI, "train": {**CI["train"], "lr": 0.5}}
    path = tmp_path / "ci.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert main(["run", str(path), "--storage", str(out.parent), "--resume"]) == 2
    assert "changed: train" in capsys.readouterr().err


def run_cli(args: list[str], kill_after: str | None = None,
            kill=lambda proc: proc.kill()) -> tuple[int, str, list[str]]:
    """`didray` in a subprocess (its own Ray). Once a line containing `kill_after` is printed,
    `kill(proc)` runs. Returns the exit code, stderr and the names of the processes it had
    started that were still alive 10 s after it exited (they are killed then)."""
    proc = subprocess.Popen([sys.executable, "-m", "didray.cli", *args], cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines, family = [], []
    for line in proc.stderr:
        lines.append(line)
        if kill_after and kill_after in line:
            family = psutil.Process(proc.pid).children(recursive=True)
            kill(proc)
            kill_after = None
    code = proc.wait(timeout=600)
    _, alive = psutil.wait_procs(family, timeout=10)
    names = [p.name() for p in alive]
    for leftover in alive:  # the killed driver's own Ray processes, nothing else
        leftover.kill()
    return code, "".join(lines), names


KEYS = {"trials": ["beta", "regime"], "steps": ["beta", "regime", "step"],
        "evals": ["beta", "regime", "estimator", "proposal", "prompt_id"]}


def comparable(path: Path, name: str) -> pl.DataFrame:
    """A results table without what legitimately differs between two runs of one sweep."""
    frame = pl.read_parquet(path / f"{name}.parquet")
    drop = [c for c in frame.columns if c in ("trial_id", "node_id", "checkpoint_path", "error")
            or c.endswith("tokens_per_s") or c.startswith("time/")]
    return frame.drop(drop).sort(KEYS[name])


def assert_same_results(out: Path, clean: Path, tables: tuple[str, ...] = tuple(KEYS)
                        ) -> None:
    """Row for row equal to the uninterrupted CI sweep's trials with the same axes."""
    for name in tables:
        keys = KEYS[name]
        got = comparable(out, name)
        want = comparable(clean, name).join(got.select("beta", "regime").unique(),
                                            on=["beta", "regime"]).sort(keys)
        assert got.height == want.height > 0, name
        assert got.select(want.columns).equals(want), name


def one_trial_sweep(tmp_path: Path) -> list[str]:
    """`didray run` arguments for the CI sweep cut to its beta 0.1, pg trial, under tmp_path."""
    sweep = {**CI, "search": {"beta": [0.1], "regime": ["pg"]}}
    path = tmp_path / "ci.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return ["run", str(path), "--storage", str(tmp_path)]


@pytest.mark.parametrize("kill_after", ["step 2/6", "finished"])
def test_killed_driver_resumes_to_the_uninterrupted_results(ci_sweep, tmp_path, kill_after):
    """kill -9 of `didray run` while the first trial trains, or between trials; `--resume`
    then finishes with exactly the results of a run that was never interrupted."""
    _, clean = ci_sweep
    sweep = {**CI, "search": {"beta": [0.1, 0.5], "regime": ["pg"]},
             "scaling": {**CI["scaling"], "max_concurrent_trials": 1}}
    path = tmp_path / "ci.yaml"
    path.write_text(yaml.safe_dump(sweep))
    args = ["run", str(path), "--storage", str(tmp_path)]

    code, first, _ = run_cli(args, kill_after=kill_after)
    assert code == -signal.SIGKILL, first
    done = [line.split()[2] for line in first.splitlines() if line.endswith("finished")]

    code, second, _ = run_cli([*args, "--resume"])
    assert code == 0, second
    # A finished trial trains no step again (Tune may restart it if the kill came before it
    # saved its state; the trial then reports its results from disk).
    trained = [line.split()[1] for line in second.splitlines() if " step " in line]
    assert not set(done) & set(trained), (done, trained)

    out = tmp_path / "ci"
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.height == 2 and set(trials["status"]) == {"TERMINATED"}
    assert "error" not in trials.columns or trials["error"].null_count() == 2
    assert_same_results(out, clean)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["cache_computations"].values()) == {1}
    assert [r["resumed"] for r in manifest["runs"]] == [False, True]


def test_driver_killed_in_prepare_resumes_to_the_uninterrupted_results(ci_sweep, tmp_path):
    """kill -9 of `didray run` while prepare computes the reference log-probs (pi_ref and
    the regime's dataset built, no Tune state yet): `--resume` starts the sweep, reuses what
    prepare had finished, computes the rest and ends with the clean run's results."""
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
        ci_sweep, tmp_path):
    """kill -9 of `didray run` as soon as the trial says its last step trained and its final
    evaluation began; `--resume` finishes with the clean run's results."""
    _, clean = ci_sweep
    args = one_trial_sweep(tmp_path)
    code, first, _ = run_cli(args, kill_after="6/6: final evaluation")
    assert code == -signal.SIGKILL, first
    # The window was hit: the last report (it carries the final evaluation, which takes
    # seconds here where a step takes milliseconds) never reached the driver.
    assert " step 6/6 loss" not in first, first

    code, second, _ = run_cli([*args, "--resume"])
    assert code == 0, second
    assert_same_results(tmp_path / "ci", clean)


def test_sigterm_stops_the_sweep_and_its_ray_then_resume_finishes(tmp_path):
    args = one_trial_sweep(tmp_path)
    code, log, leftovers = run_cli(args, kill_after="step 2/6", kill=lambda p: p.terminate())
    assert code == 130, log
    assert leftovers == [], leftovers
    code, log, _ = run_cli([*args, "--resume"])
    assert code == 0, log
    trials = pl.read_parquet(tmp_path / "ci" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"] and trials["step"].to_list() == [6]


def move_interrupted_sweep(tmp_path: Path, scaling: dict) -> tuple[Path, Path]:
    """The CI sweep's two pg trials, one at a time, with `scaling`: its driver killed in the
    first trial, the sweep moved (its old directory gone) and resumed in its new place.
    Returns the new results directory and the old storage."""
    sweep = {**CI, "search": {"beta": [0.1, 0.5], "regime": ["pg"]},
             "scaling": {**CI["scaling"], **scaling, "max_concurrent_trials": 1}}
    path = tmp_path / "ci.yaml"
    path.write_text(yaml.safe_dump(sweep))
    old, new = tmp_path / "old", tmp_path / "new"
    code, log, _ = run_cli(["run", str(path), "--storage", str(old)], kill_after="step 2/6")
    assert code == -signal.SIGKILL, log
    new.mkdir()
    shutil.move(old / "ci", new / "ci")
    shutil.rmtree(old)
    code, log, _ = run_cli(["run", str(path), "--storage", str(new), "--resume"])
    assert code == 0, log
    return new / "ci", old


def test_moved_sweep_resumes_in_its_new_place(ci_sweep, tmp_path):
    """An interrupted sweep moved elsewhere resumes and writes only in the new place, with
    the uninterrupted results."""
    _, clean = ci_sweep
    out, old = move_interrupted_sweep(tmp_path, {})
    assert not old.exists()
    assert_same_results(out, clean)


def test_moved_sweep_of_train_runs_creates_its_later_trials_in_the_new_place(tmp_path):
    """Two-worker trials run as Ray Train runs, and Tune holds them back (its concurrency
    limit), so the second trial is first created after the restore: it too runs and writes
    in the new place (Tune's saved generator held the old one)."""
    out, old = move_interrupted_sweep(tmp_path, {"workers_per_trial": 2})
    assert not old.exists()
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.sort("beta")["beta"].to_list() == [0.1, 0.5]
    assert set(trials["status"]) == {"TERMINATED"} and set(trials["step"]) == {6}
    steps = pl.read_parquet(out / "steps.parquet")
    assert sorted(steps["step"].to_list()) == [0, 0, 2, 2, 4, 4, 6, 6]
    assert set(steps["workers"]) == {2}


EXACT_STEP_METRICS = ("did/entropy", "eval/instruction_score", "eval/qa_accuracy")


def test_eval_every_evaluates_every_second_report_and_the_last_step(ci_sweep, tmp_path):
    """eval.every: 2 with reports at steps 2, 4 and 6: the exact evaluation runs at 4 and at
    the last step only (pi_ref's at step 0), step 2 carries none. Skipping it changes no
    training, so every other value, the final evaluation and the trial's results equal the
    every-report run's."""
    _, clean = ci_sweep
    sweep = {**CI, "search": {"beta": [0.1], "regime": ["pg"]}, "eval": {"every": 2}}
    path = tmp_path / "ci.yaml"
    path.write_text(yaml.safe_dump(sweep))
    try:
        assert main(["run", str(path), "--storage", str(tmp_path)]) == 0
    finally:
        ray.shutdown()
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


# The process that trains a trial: Tune's trial process for one-worker toy trials (they train
# in it), a Ray Train worker otherwise.
TRAINERS = ("ray::ImplicitFunc", "RayTrainWorker")


def kill_trainer(proc: subprocess.Popen) -> None:
    """kill -9 of the process training the sweep's one trial (a descendant of `proc` only)."""
    trainers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if any(t in " ".join(p.cmdline()) for t in TRAINERS)]
    assert len(trainers) == 1, trainers
    trainers[0].kill()


def test_lost_trainer_restarts_from_its_checkpoint(ci_sweep, tmp_path):
    """The process training the trial killed after step 2: Ray restarts the trial from the
    step-2 checkpoint by itself, the sweep exits 0 and its results equal the clean run's."""
    _, clean = ci_sweep
    code, log, _ = run_cli(one_trial_sweep(tmp_path), kill_after="step 2/6", kill=kill_trainer)
    assert code == 0, log
    assert_same_results(tmp_path / "ci", clean)


def test_two_ddp_workers_train_one_trial(tmp_path, monkeypatch):
    sweep = {**CI, "name": "ddp", "search": {"beta": [0.1], "regime": ["pg"]},
             "train": {**CI["train"], "steps": 4, "report_every": 2},
             "scaling": {"workers_per_trial": 2, "cpus_per_worker": 1,
                         "max_concurrent_trials": 1}}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(sweep))
    # A relative storage path, as in the shipped sweep files: Ray workers run elsewhere, so
    # the driver must hand them absolute paths.
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["run", str(path), "--storage", "."]) == 0
    finally:
        ray.shutdown()
    steps = pl.read_parquet(tmp_path / "ddp" / "steps.parquet").sort("step")
    assert steps["step"].to_list() == [0, 2, 4]  # step 0: pi_ref, written by rank 0
    assert steps["workers"].to_list() == [2, 2, 2]
    trials = pl.read_parquet(tmp_path / "ddp" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"]
    assert trials["dpo_loss"][0] < math.log(2)
