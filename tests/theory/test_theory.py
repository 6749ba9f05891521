"""`didray theory`: statuses, convergence diagnostics, exit codes, and mutations the report
must catch."""

import math

import polars as pl
import pytest
import torch

from didray.cli import main
from didray.core.did import did_entropy
from didray.theory import checks
from didray.theory.claims import Claim, Fit, miss_status, reach_status, sign_flips
from didray.theory.report import TAUS, theory_report
from didray.worlds.tabular import random_instance, retilt

# One low-entropy instance where population DPO is too flat to resolve (docs/design.md §7.6):
# beta 2, tau 0.05. No claim fails there; several are unresolved.
FLAT = ["theory", "--outcomes", "10", "--beta", "2", "--tau", "0.05", "--instances", "1",
        "--steps", "20", "--format", "csv"]
# A small grid of two taus (pooled rows resolve) on which every project claim holds; ~5 s of CPU.
SMALL = ["theory", "--outcomes", "10", "--instances", "1", "--tau", "0.15", "2", "--steps", "50",
         "--format", "csv"]
PAPER_ROWS = 6  # the paper's statements the math contradicts, reported beside the restatements


@pytest.mark.parametrize(
    ("values", "low_positive", "flips"),
    [
        ([1.0, 2.0, -1.0, -2.0], True, 0),  # + + - -: a threshold between 2nd and 3rd
        ([1.0, -2.0, 3.0, -4.0], True, 1),  # + - + -: flip the third (or the second)
        ([-1.0, -2.0, -3.0, -4.0], True, 1),  # never positive: the lowest must flip
        ([-1.0, -2.0, 3.0, 4.0], True, 3),  # reversed: + - - - or + + + - both need 3
        ([-1.0, -2.0, 3.0, 4.0], False, 0),
    ],
)
def test_sign_flips_hand_counted(values, low_positive, flips):
    entropies = [4.0, 3.0, 2.0, 1.0][::-1]  # already sorted: values are in entropy order
    assert sign_flips(entropies, values, low_positive) == flips
    # Order comes from the entropies, not from the list.
    assert sign_flips(entropies[::-1], values[::-1], low_positive) == flips


@pytest.mark.parametrize(
    ("fit", "status"),
    [
        (Fit(tv=1e-9, loss_gap=0.0, grad=1e-15, target_grad=1e-17), "holds"),
        (Fit(tv=0.4, loss_gap=3e-13, grad=9e-14, target_grad=2e-17), "unresolved"),
        (Fit(tv=0.4, loss_gap=-1e-6, grad=1e-14, target_grad=2e-17), "fails"),  # beats target
        (Fit(tv=0.4, loss_gap=1e-3, grad=1e-3, target_grad=1e-4), "fails"),  # target not optimal
    ],
)
def test_reach_status(fit, status):
    assert reach_status(fit)[0] == status


@pytest.mark.parametrize(
    ("fit", "status"),
    [
        (Fit(tv=0.2, loss_gap=-0.1, grad=1e-14, target_grad=1e-3), "holds"),
        (Fit(tv=1e-4, loss_gap=0.0, grad=1e-14, target_grad=1e-3), "fails"),
        (Fit(tv=0.2, loss_gap=0.0, grad=1e-14, target_grad=1e-15), "unresolved"),
    ],
)
def test_miss_status(fit, status):
    assert miss_status(fit)[0] == status


def test_claim_row_counts_statuses_and_takes_the_worst_resolved_value():
    claim = Claim("c", "cond", "m", "< 1", holds_if=lambda v: v < 1)
    claim.add(0.5)
    claim.add(0.9)
    claim.add(7.0, "unresolved", "flat")
    row = claim.row()
    assert (row["kind"], row["status"], row["value"]) == ("claim", "unresolved", 0.9)
    assert (row["instances"], row["note"]) == ("2 holds, 1 unresolved", "flat")
    claim.add(2.0)
    assert (claim.row()["status"], claim.row()["value"]) == ("fails", 2.0)
    reported = Claim("r", "cond", "m", "", holds_if=None)
    reported.add(-3.0)
    assert (reported.row()["kind"], reported.row()["status"]) == ("reported", "reported")


def test_a_paper_row_keeps_its_instance_statuses_but_is_reported():
    paper = Claim("p", "cond", "m", "> 0", holds_if=lambda v: v > 0, worst=min,
                  whose="paper v2, contradicted by identity", notes=["shift = -KL <= 0"])
    paper.add(0.5)
    paper.add(-0.25)
    row = paper.row()
    assert (row["kind"], row["whose"], row["status"]) == (
        "reported", "paper v2, contradicted by identity", "reported")
    assert (row["value"], row["instances"], row["note"]) == (-0.25, "1 holds, 1 fails",
                                                             "shift = -KL <= 0")


def test_tilt_minimiser_on_two_outcomes():
    # pi_ref = [1/2, 1/2], pi_star = [4/5, 1/5]: f(t) = log((1.6^t + 0.4^t) / 2), whose slope
    # vanishes where 1.6^t log 1.6 = -0.4^t log 0.4, i.e. t0 = log(-log 0.4 / log 1.6) / log 4.
    half = torch.tensor([0.5, 0.5], dtype=torch.float64).log()
    star = torch.tensor([0.8, 0.2], dtype=torch.float64).log()
    t0 = math.log(-math.log(0.4) / math.log(1.6)) / math.log(4)
    assert checks.tilt_minimiser(half, star) == pytest.approx(t0, abs=1e-15)
    assert t0 == pytest.approx(0.48157, abs=1e-5)


def test_default_grid_spans_low_to_near_maximal_did_entropy():
    base = random_instance(50, 1.0, torch.Generator().manual_seed(0))
    entropies = [float(did_entropy(retilt(base, tau).logp_star, base.logp_ref))
                 for tau in TAUS]
    assert entropies == sorted(entropies)  # dH/dtau >= 0 (§1.7)
    assert entropies[0] < 2.5 and entropies[-1] > math.log(50) - 0.05


def test_low_entropy_flat_loss_is_unresolved_not_failed():
    report = theory_report(outcomes=10, beta=2.0, taus=(0.05,), instances=1, steps=20)
    row = report.claims.filter(pl.col("condition") == "pi_w = pi_ref",
                               pl.col("claim").str.contains("reaches pi_star")).row(0, named=True)
    assert row["status"] == "unresolved" and row["value"] > 1e-6
    fit = report.fits.filter(pl.col("fit") == "thm 4.1 pi_w = pi_ref").row(0, named=True)
    # pi_star is stationary and the fit is no better than pi_star: the loss cannot separate them.
    assert fit["target_grad"] < 1e-10 and abs(fit["loss_gap"]) < 1e-12
    assert report.claims.filter(pl.col("status") == "fails").height == 0
    pooled = report.claims.filter(pl.col("instances").str.starts_with("pooled"))
    assert pooled.height == 4 and set(pooled["status"]) == {"reported"}  # the paper's
    assert all(note.endswith("; needs a grid of >= 2 taus") for note in pooled["note"])


def test_cli_counts_reported_and_unresolved_rows_apart_and_exits_0(capsys):
    assert main(FLAT) == 0
    captured = capsys.readouterr()
    rows = pl.read_csv(captured.out.encode())
    assert rows.columns == ["kind", "whose", "claim", "condition", "metric", "value", "expected",
                            "status", "instances", "note"]
    claims = rows.filter(pl.col("kind") == "claim")
    holds = claims.filter(pl.col("status") == "holds").height
    unresolved = claims.filter(pl.col("status") == "unresolved").height
    reported = rows.filter(pl.col("kind") == "reported")
    assert unresolved > 0 and set(reported["status"]) == {"reported"}
    err = captured.err.splitlines()
    assert err[0].startswith("didray theory: instance 1/1: draw 0, tau 0.05")
    assert err[-1] == (f"{holds}/{claims.height} claims hold, 0 fail, {unresolved} numerically "
                       f"unresolved; {reported.height} rows reported, not claims")


def summary(captured) -> str:
    return captured.err.splitlines()[-1]


def test_small_grid_exits_0_with_every_project_claim_held(capsys):
    assert main(SMALL) == 0
    captured = capsys.readouterr()
    assert summary(captured) == ("18/18 claims hold, 0 fail, 0 numerically unresolved; "
                                 "8 rows reported, not claims")
    rows = pl.read_csv(captured.out.encode())
    paper = rows.filter(pl.col("whose").str.starts_with("paper v2"))
    assert paper.height == PAPER_ROWS and set(paper["kind"]) == {"reported"}
    assert set(rows.filter(pl.col("kind") == "claim")["whose"]) == {"project"}
    # The paper's "chosen rise at pi_star" is contradicted on one instance (beta < t0), and the
    # project's restatement of it, the sign of beta - t0, holds on both.
    at_optimum = rows.filter(pl.col("condition").str.starts_with("pi_l = pi_ref, at pi_star"))
    assert at_optimum.select("whose", "status", "instances").rows() == [
        ("paper v2, contradicted by derivation", "reported", "1 holds, 1 fails"),
        ("project", "holds", "2 holds")]


@pytest.mark.slow  # the default grid: ~30 s of CPU, minutes on a loaded machine
def test_default_grid_exits_0(capsys):
    assert main(["theory", "--format", "csv"]) == 0
    assert summary(capsys.readouterr()) == ("17/18 claims hold, 0 fail, 1 numerically "
                                            "unresolved; 8 rows reported, not claims")


def test_a_planted_error_in_the_rejected_distribution_exits_1(monkeypatch, capsys):
    """§1.4's pi_l ∝ pi_ref^(1+beta) pi_star^(-beta) with the "1 +" dropped."""
    monkeypatch.setattr(checks, "optimal_rejected_logprobs", lambda logp_ref, logp_star, beta:
                        torch.log_softmax(beta * logp_ref - beta * logp_star, dim=-1))
    assert main(SMALL) == 1  # the same run exits 0 unplanted (above)
    captured = capsys.readouterr()
    rows = pl.read_csv(captured.out.encode()).filter(pl.col("status") == "fails")
    assert rows.select("claim", "condition").rows() == [
        ("power-law DID condition (1.3)", "rejected=§1.4"),
        ("log-margin ordering m_l <= m_ref <= m_star (1.5)", "rejected=§1.4, DID-oriented pairs"),
        ("m_ref - m_l = beta (m_star - m_ref) (1.5)", "rejected=§1.4"),
        ("v2 Thm 4.1: population DPO reaches pi_star", "pi_w = pi_ref"),
        ("DPO optimum at beta_train != beta_data (1.9)",
         "beta_data=0.5, beta_train=1: reaches pi_ref (pi_star/pi_ref)^(b_d/b_t)"),
        ("DPO on sampled pairs approaches pi_star",
         "pi_w = pi_ref, rejected=§1.4, 1e4 -> 1e6 pairs")]
    assert summary(captured) == ("12/18 claims hold, 6 fail, 0 numerically unresolved; "
                                 "8 rows reported, not claims")


def test_policy_entropy_in_place_of_did_entropy_fails_the_report(monkeypatch, capsys):
    """The mutation: the report's DID entropy replaced by the policy's own entropy."""
    monkeypatch.setattr(checks, "did_entropy", lambda logp, logr, dim=-1: checks.entropy(logp))
    assert main(FLAT) == 1  # the same run exits 0 unmutated (previous test)
    rows = pl.read_csv(capsys.readouterr().out.encode())
    failed = rows.filter(pl.col("status") == "fails")["claim"].to_list()
    assert failed == ["DID of a score tilt is softmax(score/tau) (1.7)"]


def test_cli_shows_fits_and_dynamics(capsys):
    assert main([*FLAT, "--show", "fits"]) == 0
    fits = pl.read_csv(capsys.readouterr().out.encode())
    assert fits.columns == ["draw", "tau", "fit", "tv", "loss_gap", "grad", "target_grad",
                            "status", "note"]
    assert fits.height == 2 + 1 + 1 + 13 + 2  # Thm 4.1 x 2, mismatch x 2, family, sampled x 2
    assert main([*FLAT, "--show", "dynamics"]) == 0
    dynamics = pl.read_csv(capsys.readouterr().out.encode())
    assert dynamics.height == 2 * 21  # two cases, steps 0..20
    assert dynamics.filter(pl.col("step") == 0)["did_entropy"].to_list() == pytest.approx(
        [math.log(10)] * 2, abs=1e-12)  # pi_0 = pi_ref: a uniform DID


@pytest.mark.parametrize(
    "kwargs", [{"outcomes": 0}, {"beta": 0.0}, {"taus": (0.5, -1.0)}, {"steps": 0}])
def test_theory_report_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        theory_report(**kwargs)


@pytest.mark.parametrize("flag", ["--steps", "--instances"])
def test_cli_rejects_counts_below_one(flag, capsys):
    assert main(["theory", flag, "0"]) == 2
    assert f"{flag}: must be >= 1 (got 0)" in capsys.readouterr().err
