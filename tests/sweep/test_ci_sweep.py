"""The contract of a finished sweep: what `didray run sweeps/ci.yaml` writes, read from the
session's one CI sweep (fast tier: this module starts nothing itself)."""

import json
import math

import polars as pl
import pytest

from didray import metrics
from didray.analysis import load


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


def test_ci_sweep_stores_the_judge_weight_and_both_parts(ci_sweep):
    """Each toy trial names the weight its instruction_score was read at (the default 0.5:
    sweeps/ci.yaml names none) and stores the two parts, from which analysis rebuilds the
    score at any weight; the QA split by what the data can teach is there too."""
    _, out = ci_sweep
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials["judge_weight"].to_list() == [0.5] * 4
    rebuilt = 0.5 * trials["instruction_judge"] + 0.5 * trials["instruction_coverage"]
    assert (rebuilt - trials["instruction_score"]).abs().max() < 1e-6  # float32 tables
    for column in ("qa_accuracy_teachable", "qa_accuracy_unteachable",
                   "optimum_qa_accuracy_teachable"):
        assert column in trials.columns, column


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


