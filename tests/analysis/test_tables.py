"""The analysis tables against answers computed by hand from the fixture in conftest.py."""

import math

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal
from support.judged import judge_frame

from didray.analysis.load import Results
from didray.analysis.tables import (
    CURVES,
    compare,
    correlations,
    dynamics,
    entropy_vs_scores,
    instruction_at,
    optimum,
    regimes,
    weight_correlations,
)
from didray.config.schema import Judge
from didray.errors import BadInput
from didray.eval.toy import PromptTables, evaluate_tables

T1 = math.tan(0.95 * math.pi / 2)  # t_{0.975} with 1 d.o.f.: the Cauchy quantile
T2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # with 2 d.o.f.: solves t / sqrt(2 + t^2) = 0.95
COUNT = pl.UInt32
INTERVALS = ["pearson_ci_low", "pearson_ci_high", "spearman_ci_low", "spearman_ci_high"]


def test_entropy_vs_scores_by_hand(results):
    half_pg = T2 * 1.0 / math.sqrt(3)  # seeds 1, 2, 3: sd 1
    half_pl = T1 * math.sqrt(2) / math.sqrt(2)  # seeds 5, 7: sd sqrt(2)
    expected = pl.DataFrame(
        {"sweep": ["s", "s", "s"], "regime": ["pg", "pg", "pl"],
         "regime_kind": ["pg", "pg", "powerlaw"], "tau": [None, None, 0.5],
         "beta_data": [None, None, 0.1], "beta": [0.1, 0.5, 0.1],
         "trials": [3, 3, 2], "finished": [3, 1, 2], "failed": [0, 1, 0], "stopped": [0, 0, 0],
         "running": [0, 1, 0],
         "did_entropy_estimator": ["exact"] * 3, "did_entropy": [2.0, 4.0, 6.0],
         "did_entropy_ci_low": [2.0 - half_pg, None, 6.0 - half_pl],
         "did_entropy_ci_high": [2.0 + half_pg, None, 6.0 + half_pl],
         "instruction_score": [0.6, 0.8, 0.95], "instruction_winrate": [None, None, None],
         "qa_accuracy": [2 / 3, 0.0, 0.0], "chosen_displacement": [-2.0, -4.0, -6.0],
         "rejected_displacement": [None, None, None], "reward_accuracy": [None, None, None]},
        schema_overrides={"trials": COUNT, "finished": COUNT, "failed": COUNT, "stopped": COUNT,
                          "running": COUNT, "instruction_winrate": pl.Float64,
                          "rejected_displacement": pl.Float64, "reward_accuracy": pl.Float64})
    assert_frame_equal(entropy_vs_scores(results), expected)


def test_partial_sweep_counts_every_trial(results):
    """The failed and the running trial are counted, and their (absent) scores do not dilute
    the means."""
    row = entropy_vs_scores(results).filter(pl.col("beta") == 0.5).row(0, named=True)
    assert (row["trials"], row["finished"], row["failed"], row["running"]) == (3, 1, 1, 1)
    assert row["did_entropy"] == 4.0


def test_stopped_trials_are_counted_apart_and_never_averaged(results):
    """A trial ASHA stopped has a status of its own, and its values (here a did_entropy a
    stopped trial would not even have) stay out of the means like a failed trial's."""
    stopped = results.trials.collect().filter(pl.col("trial_id") == "t3").with_columns(
        trial_id=pl.lit("t8"), seed=pl.col("seed") + 3, status=pl.lit("STOPPED"),
        did_entropy=pl.lit(40.0), instruction_score=pl.lit(-1.0))
    steps = results.steps.collect()
    cut = steps.filter((pl.col("trial_id") == "t3") & (pl.col("step") == 1)).with_columns(
        trial_id=pl.lit("t8"), seed=pl.col("seed") + 3)  # stopped after its first report
    grown = Results.of(pl.concat([results.trials.collect(), stopped]),
                       pl.concat([steps, cut]), sweep="s")
    row = entropy_vs_scores(grown).filter(pl.col("beta") == 0.5).row(0, named=True)
    counts = tuple(row[c] for c in ("trials", "finished", "failed", "stopped", "running"))
    assert counts == (4, 1, 1, 1, 1)
    assert (row["did_entropy"], row["instruction_score"]) == (4.0, 0.8)
    step1 = dynamics(grown).filter((pl.col("beta") == 0.5) & (pl.col("step") == 1))
    assert step1.select("trials", "stopped", "running").row(0) == (4, 1, 1)


def correlation_results(did: list, score: list, extra_status: bool = True) -> Results:
    """One trial per regime (its own dataset, an independent unit), all at one beta."""
    n = len(did)
    rows = {"trial_id": [f"t{i}" for i in range(n)], "regime": [f"r{i}" for i in range(n)],
            "status": ["TERMINATED"] * n,
            "did_entropy": did, "did_entropy_estimator": ["exact"] * n,
            "instruction_score": score, "qa_accuracy": [0.5] * n,
            "chosen_displacement": [2.0 * x for x in did]}
    frame = pl.DataFrame(rows)
    if extra_status:  # failed, running and stopped trials with values that would spoil everything
        frame = pl.concat([frame, pl.DataFrame(
            {"trial_id": ["f", "r", "x"], "regime": ["f", "r", "x"],
             "status": ["ERROR", "RUNNING", "STOPPED"],
             "did_entropy": [9.0, 9.0, 9.0], "did_entropy_estimator": [None, None, "exact"],
             "instruction_score": [-9.0, -9.0, -9.0], "qa_accuracy": [0.0, 1.0, 0.0],
             "chosen_displacement": [0.0, 0.0, 0.0]})])
    return Results.of(frame, sweep="s")


def test_correlations_by_hand():
    """x = 1..4, y = 1, 3, 2, 10: Spearman 1 - 6 * 2 / (4 * 15) = 0.8; Pearson
    13 / sqrt(5 * 50). A linear score has both 1 in every resample; a constant one has none."""
    table = correlations(correlation_results([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 10.0]))
    expected = pl.DataFrame(
        {"sweep": ["s"] * 3, "did_entropy_estimator": ["exact"] * 3,
         "score": ["chosen_displacement", "instruction_score", "qa_accuracy"],
         "entropy": ["did_entropy"] * 3,
         "n": [4, 4, 4], "units": [4, 4, 4], "stratum_units": [4, 4, 4],
         "pearson": [1.0, 13 / math.sqrt(250), None],
         "pearson_ci_low": [1.0, None, None], "pearson_ci_high": [1.0, None, None],
         "spearman": [1.0, 0.8, None],
         "spearman_ci_low": [1.0, None, None], "spearman_ci_high": [1.0, None, None]},
        schema_overrides={"n": COUNT, "units": COUNT, "stratum_units": COUNT,
                          **{c: pl.Float64 for c in INTERVALS}})
    assert_frame_equal(table.drop(INTERVALS), expected.drop(INTERVALS))
    linear = table.filter(pl.col("score") == "chosen_displacement")
    # atanh(1) is infinite: the bootstrap works with 1 - 1e-6 (stats.FISHER_CLIP)
    assert_frame_equal(linear, expected.head(1), abs_tol=1e-5)
    row = table.filter(pl.col("score") == "instruction_score").row(0, named=True)
    for method in ("pearson", "spearman"):
        assert -1 <= row[f"{method}_ci_low"] < row[method] < row[f"{method}_ci_high"] <= 1


def test_correlations_are_reproducible_and_need_three_units_for_an_interval():
    results = correlation_results([1.0, 2.0, 3.0, 4.0, 6.0], [1.0, 3.0, 2.0, 10.0, 4.0])
    assert_frame_equal(correlations(results), correlations(results))
    pair = correlations(correlation_results([1.0, 2.0], [3.0, 5.0], extra_status=False))
    row = pair.filter(pl.col("score") == "instruction_score").row(0, named=True)
    assert (row["n"], row["units"], row["pearson"], row["spearman"]) == (2, 2, 1.0, 1.0)
    assert row["pearson_ci_low"] is None and row["spearman_ci_high"] is None


def grid(regimes: int, betas: list[float], seeds: int, score, spread: float = 0.1) -> Results:
    """A finished grid sweep: regime r's DID entropy is r + beta + spread * seed, its
    `instruction_score` score(entropy, regime)."""
    rows = [{"trial_id": f"r{r}b{b}s{s}", "regime": f"r{r}", "beta": b, "seed": s,
             "status": "TERMINATED", "did_entropy": r + b + spread * s,
             "instruction_score": score(r + b + spread * s, r)}
            for r in range(regimes) for b in betas for s in range(seeds)]
    return Results.of(pl.DataFrame(rows), sweep="s")


def test_the_manipulated_and_the_learned_entropy_are_read_apart():
    """docs/design.md §3.7: 6 regimes whose data encode levels 0..5 while the policies learn
    the reverse order; the score follows the data's level. Against the data's entropy
    Spearman is +1 in every beta, against the learned one -1: each its own row."""
    frame = grid(6, [0.5, 1.0], 1, lambda entropy, r: float(r)).trials.collect()
    frame = frame.with_columns(data_did_entropy=pl.col("regime").str.slice(1).cast(pl.Float64),
                               did_entropy=-pl.col("did_entropy"))
    results = Results.of(frame.drop("sweep"), sweep="s")
    learned, data = (score_row(results, entropy=x) for x in ("did_entropy", "data_did_entropy"))
    assert (learned["entropy"], learned["spearman"], learned["units"]) == ("did_entropy", -1, 6)
    assert (data["entropy"], data["spearman"], data["units"]) == ("data_did_entropy", 1, 6)


def score_row(results: Results, **kwargs) -> dict:
    table = correlations(results, **kwargs)
    return table.filter(pl.col("score") == "instruction_score").row(0, named=True)


def test_the_ci_sweep_shape_has_two_units_and_no_interval():
    """sweeps/ci.yaml with one seed: 2 regimes x 2 betas, 4 trials. Two points per beta always
    lie on a line, so Spearman is 1 and every resample repeats it or is undefined: there is no
    interval (it used to print [1, 1]) and two units, not four trials."""
    row = score_row(grid(2, [0.1, 0.5], 1, lambda did, r: did))
    assert (row["n"], row["units"], row["stratum_units"], row["spearman"]) == (4, 2, 2, 1.0)
    assert row["spearman_ci_low"] is None and row["spearman_ci_high"] is None


def test_seeds_that_repeat_a_dataset_add_no_information():
    """The independent unit is the regime's dataset: a second seed with the first seed's values
    leaves every correlation and interval as it was (resampling trials narrowed them)."""
    def noisy(did, regime):  # not monotone in DID entropy
        return [0.3, 0.1, 0.5, 0.2, 0.9, 0.4][regime] + did / 10

    one = score_row(grid(6, [0.5, 1.0], 1, noisy))
    two = score_row(grid(6, [0.5, 1.0], 2, noisy, spread=0.0))
    assert (one["units"], two["units"], one["n"], two["n"]) == (6, 6, 12, 24)
    assert -1 < one["spearman_ci_low"] < one["spearman"] < one["spearman_ci_high"] < 1
    for column in ("spearman", "spearman_ci_low", "spearman_ci_high", "pearson_ci_low"):
        assert two[column] == pytest.approx(one[column], abs=1e-12), column


def test_correlations_do_not_depend_on_row_order():
    results = grid(6, [0.5, 1.0, 2.0], 2, lambda did, r: (did * 7919) % 13)
    shuffled = Results.of(results.trials.collect().sample(fraction=1.0, shuffle=True, seed=3))
    assert_frame_equal(correlations(results), correlations(shuffled))


def test_dynamics_by_hand(results):
    """loss = step + seed / 10, did/entropy = 4 - seed at step 2 only; the running trial
    reported step 1 only, the failed one both steps."""
    table = dynamics(results)
    sd2 = math.sqrt(0.005)  # sd of two values 0.1 apart
    expected = pl.DataFrame(
        {"sweep": ["s"] * 6, "regime": ["pg", "pg", "pg", "pg", "pl", "pl"],
         "beta": [0.1, 0.1, 0.5, 0.5, 0.1, 0.1], "step": [1, 2, 1, 2, 1, 2],
         "trials": [3, 3, 3, 2, 2, 2], "finished": [3, 3, 1, 1, 2, 2],
         "failed": [0, 0, 1, 1, 0, 0], "stopped": [0] * 6, "running": [0, 0, 1, 0, 0, 0],
         "loss_mean": [1.1, 2.1, 1.1, 2.05, 1.05, 2.05],
         "loss_std": [0.1, 0.1, 0.1, sd2, sd2, sd2],
         "did/entropy_mean": [None, 3.0, None, 3.5, None, 3.5],
         "did/entropy_std": [None, 1.0, None, math.sqrt(0.5), None, math.sqrt(0.5)]},
        schema_overrides={"step": pl.Int64, "trials": COUNT, "finished": COUNT, "failed": COUNT,
                          "stopped": COUNT, "running": COUNT})
    assert_frame_equal(table.select(expected.columns), expected)
    others = [f"{m}_{s}" for m in CURVES if m not in ("loss", "did/entropy")
              for s in ("mean", "std")]
    assert table.select(others).null_count().row(0) == (6,) * len(others)


def test_compare_pivots_a_metric(results):
    expected = pl.DataFrame({"regime": ["pg", "pl"], "beta=0.1": [2.0, 6.0],
                             "beta=0.5": [4.0, None]})
    assert_frame_equal(compare(results, "did_entropy"), expected)
    by_status = compare(results, "final/loss", rows=["regime"], columns="status")
    assert_frame_equal(by_status, pl.DataFrame(
        {"regime": ["pg", "pl"], "status=ERROR": [0.5, None], "status=RUNNING": [0.5, None],
         "status=TERMINATED": [0.5, 0.5]}))


def test_compare_names_an_unknown_column(results):
    with pytest.raises(BadInput, match="unknown column 'nope'"):
        compare(results, "nope")
    with pytest.raises(BadInput, match="unknown column 'regime'"):
        compare(results, "regime")  # not numeric


def test_regimes_table_keeps_what_the_data_encode_and_the_learned_mean():
    """One row per regime with its data_* columns; the learned DID entropy averages finished
    trials only (the failed one's 9.0 must not count); ordered by data DID entropy."""
    frame = pl.DataFrame(
        {"trial_id": ["a", "b", "c", "d"], "regime": ["low", "low", "high", "high"],
         "status": ["TERMINATED", "ERROR", "TERMINATED", "TERMINATED"],
         "did_entropy": [1.0, 9.0, 5.0, 6.0], "regime_kind": ["powerlaw"] * 4,
         "tau": [0.03, 0.03, 0.16, 0.16], "data_did_entropy": [1.0, 1.0, 5.5, 5.5],
         "data_did_entropy_method": ["exact"] * 4, "data_margin_abs": [15.0, 15.0, 2.9, 2.9]})
    table = regimes(Results.of(frame, sweep="s"))
    assert table["regime"].to_list() == ["low", "high"]
    assert table["learned_did_entropy"].to_list() == [1.0, 5.5]
    assert table["finished"].to_list() == [1, 2]
    assert table["data_margin_abs"].to_list() == [15.0, 2.9]


def test_optimum_table_sets_the_learned_entropy_beside_the_closed_form():
    """Per (regime, beta): the optimum's DID entropy, the finished trials' mean learned one
    (the failed trial's 9.0 must not count), their gap and mean final TV / KL; a regime
    without an optimum (offpolicy: null columns) has no row."""
    frame = pl.DataFrame(
        {"trial_id": list("abcde"), "regime": ["low", "low", "low", "high", "off"],
         "beta": [0.5, 0.5, 0.5, 0.5, 0.5],
         "status": ["TERMINATED", "TERMINATED", "ERROR", "TERMINATED", "TERMINATED"],
         "did_entropy": [1.5, 2.5, 9.0, 4.0, 3.0], "data_did_entropy": [1.0, 1.0, 1.0, 5.5, 4.0],
         "optimum_did_entropy": [1.75, 1.75, 1.75, 4.25, None],
         "final/optimum_tv": [0.1, 0.3, 0.9, 0.05, None],
         "final/optimum_kl": [0.02, 0.04, 0.9, 0.01, None]})
    table = optimum(Results.of(frame, sweep="s"))
    assert table["regime"].to_list() == ["high", "low"]
    assert table["finished"].to_list() == [1, 2]
    assert table["learned_did_entropy"].to_list() == [4.0, 2.0]
    assert table["gap"].to_list() == pytest.approx([-0.25, 0.25])
    assert table["optimum_tv"].to_list() == pytest.approx([0.05, 0.2])
    assert table["optimum_kl"].to_list() == pytest.approx([0.01, 0.03])


def test_optimum_table_of_a_sweep_without_one_is_empty(results):
    assert optimum(results).height == 0


def two_estimator_results() -> Results:
    """A toy sweep's exact values next to an hf sweep's SNIS estimates, both of regime pg at
    beta 0.1, where their means would otherwise pool: exact 1, 2, 3; estimate 10, 20, 40."""
    def sweep(name: str, estimator: str, did: list[float], score: list[float]) -> pl.DataFrame:
        return pl.DataFrame({"sweep": name, "trial_id": [f"{name}{i}" for i in range(3)],
                             "regime": "pg", "beta": 0.1, "status": "TERMINATED",
                             "did_entropy": did, "did_entropy_estimator": estimator,
                             "instruction_score": score})
    both = pl.concat([sweep("toy", "exact", [1.0, 2.0, 3.0], [0.1, 0.2, 0.3]),
                      sweep("hf", "snis_ref_k8", [10.0, 20.0, 40.0], [0.3, 0.2, 0.1])])
    return Results.of(both)


def test_did_entropy_of_two_estimators_is_never_pooled():
    results = two_estimator_results()
    # Pooled over sweeps, each estimator is its own row and its own correlation.
    assert_frame_equal(compare(results, "did_entropy"), pl.DataFrame(
        {"did_entropy_estimator": ["exact", "snis_ref_k8"], "regime": ["pg", "pg"],
         "beta=0.1": [2.0, 70.0 / 3.0]}))
    pooled = correlations(results, by=()).filter(pl.col("score") == "instruction_score")
    assert pooled.select("did_entropy_estimator", "n", "spearman").rows() == [
        ("exact", 3, 1.0), ("snis_ref_k8", 3, -1.0)]
    table = entropy_vs_scores(results)
    assert table.select("sweep", "did_entropy_estimator", "did_entropy").rows() == [
        ("hf", "snis_ref_k8", 70.0 / 3.0), ("toy", "exact", 2.0)]


def test_compare_of_one_estimator_has_no_estimator_rows(results):
    assert compare(results, "did_entropy").columns == ["regime", "beta=0.1", "beta=0.5"]


def test_correlations_are_taken_within_beta():
    """Simpson's case: at each beta a higher DID entropy goes with a lower score, while the
    beta with the higher entropies has the higher scores. Pooled, Spearman is +0.543; within
    beta it is -1 (each stratum's centred ranks are -1, 0, 1 against 1, 0, -1)."""
    frame = pl.DataFrame(
        {"trial_id": [f"t{i}" for i in range(6)], "status": ["TERMINATED"] * 6,
         "beta": [0.5] * 3 + [2.0] * 3, "did_entropy": [1.0, 2.0, 3.0, 5.0, 6.0, 7.0],
         "instruction_score": [0.3, 0.2, 0.1, 0.9, 0.8, 0.7]})
    results = Results.of(frame, sweep="s")
    score = pl.col("score") == "instruction_score"
    within = correlations(results).filter(score).row(0, named=True)
    assert (within["n"], within["spearman"], within["pearson"]) == (6, -1.0, -1.0)
    pooled = correlations(results, within=()).filter(score).row(0, named=True)
    # ranks 1..6 against 3,2,1,6,5,4: sum d^2 = 16, rho = 1 - 6*16 / (6*35) = 0.542857
    assert pooled["spearman"] == pytest.approx(1 - 96 / 210)


def test_correlations_name_an_unknown_column(results):
    with pytest.raises(BadInput, match="correlations: unknown column 'nope'"):
        correlations(results, by=("nope",))
    with pytest.raises(BadInput, match="correlations: unknown column 'lr'"):
        correlations(results, within=("lr",))


def test_swept_settings_split_the_groups(results):
    """Trials that differ in a swept setting (`search: {train.lr: ...}`) are separate rows,
    the setting a column after beta; averaging them would blend two trainings."""
    trials = results.trials.with_columns(
        **{"train.lr": pl.when(pl.col("seed") == 0).then(1e-3).otherwise(1e-2)})
    table = entropy_vs_scores(Results(trials, results.steps, results.evals))
    pg = table.filter(pl.col("regime") == "pg", pl.col("beta") == 0.1)
    assert pg.columns[pg.columns.index("beta") + 1] == "train.lr"
    # seed 0 (did 1.0) alone at lr 1e-3; seeds 1, 2 (did 2.0, 3.0) at 1e-2
    assert pg.select("train.lr", "trials", "did_entropy").rows() == [(1e-3, 1, 1.0),
                                                                   (1e-2, 2, 2.5)]



def test_a_swept_setting_is_a_column_compare_and_correlations_take(results):
    """`train.lr` is no registered trials column, but a sweep that swept it has it: compare
    and correlations group by it instead of calling it unknown."""
    trials = results.trials.with_columns(
        **{"train.lr": pl.when(pl.col("seed") == 0).then(1e-3).otherwise(1e-2)})
    swept = Results(trials, results.steps, results.evals)
    table = compare(swept, "did_entropy", rows="train.lr", columns="regime")
    assert table.select("train.lr", "regime=pg").rows() == [(1e-3, 2.5), (1e-2, 2.5)]
    assert correlations(swept, within=("train.lr",)).height > 0


def test_instruction_at_the_sweeps_weight_is_the_evaluations_score():
    """One held-out open prompt, p = (.5, .25, .25), the first two acceptable, k = 2: judge
    .75, coverage (.75 + .4375) / 2 = .59375; at w = .3 the evaluation's score is
    .7 x .75 + .3 x .59375 = .703125, and so is the score analysis rebuilds from the parts."""
    p = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
    flag = torch.tensor([False])
    tables = PromptTables(scores=torch.zeros(1, 3, dtype=torch.float64),
                          accepted=torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64),
                          is_fact=flag, heldout=~flag, known=flag, teachable=flag)
    out = evaluate_tables(p.log(), p.log(), tables, Judge(diversity_weight=0.3, k=2))
    rebuilt = pl.DataFrame([out]).select(instruction_at(0.3)).item()
    assert out["instruction_score"] == pytest.approx(0.703125, abs=1e-15)
    assert rebuilt == pytest.approx(out["instruction_score"], abs=1e-15)


def test_weight_correlations_flip_sign_where_the_parts_say():
    """conftest's judge_frame: Spearman -1 for w < 5/11, +1 above, at every weight of the grid
    and at the sweep's own 0.45, which joins the grid marked pre-registered. Six units with a
    perfect order: every resample repeats the point, so the interval is the point itself
    (±(1 - 1e-6), stats.FISHER_CLIP)."""
    table = weight_correlations(Results.of(judge_frame(0.45), sweep="s"))
    grid = [0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert table["judge_weight"].to_list() == pytest.approx(grid)
    assert table["spearman"].to_list() == pytest.approx([-1.0] * 6 + [1.0] * 6)
    assert table["spearman_ci_low"].to_list() == pytest.approx([-1.0] * 6 + [1.0] * 6, abs=1e-5)
    assert table.filter("preregistered")["judge_weight"].to_list() == [0.45]
    assert set(table.select("score", "n", "units", "stratum_units").rows()) == {
        ("instruction_score", 6, 6, 6)}


def test_the_weight_curve_at_the_sweeps_weight_is_the_instruction_correlation():
    """On noisy trials (6 datasets x 2 betas x 2 seeds) the curve's point at the sweep's weight
    is the instruction_score correlation itself, interval included: the same re-ranked unit
    bootstrap, the same draws."""
    rows = [{"trial_id": f"r{r}b{b}s{s}", "regime": f"r{r}", "beta": b, "seed": s,
             "status": "TERMINATED", "did_entropy": r + b + s / 10, "judge_weight": 0.5,
             "instruction_judge": ((r * 7 + s * 3) % 5) / 5 + b / 10,
             "instruction_coverage": ((r * 3 + s) % 4) / 4 + r / 20}
            for r in range(6) for b in (0.5, 1.0) for s in range(2)]
    results = Results.of(pl.DataFrame(rows).with_columns(instruction_score=instruction_at(0.5)),
                         sweep="s")
    curve = weight_correlations(results).filter("preregistered").drop("judge_weight",
                                                                      "preregistered")
    direct = correlations(results).filter(pl.col("score") == "instruction_score")
    assert -1 < curve["spearman_ci_low"].item() < curve["spearman_ci_high"].item() < 1
    assert_frame_equal(curve, direct.select(curve.columns))


def test_weight_correlations_of_an_hf_sweep_are_empty(results):
    """Trials without the judge's two parts (conftest's, as an hf sweep's) give no rows."""
    assert weight_correlations(results).is_empty()
