"""`didray theory`: statuses, convergence diagnostics, and a mutation the report must catch."""

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
    assert pooled.height == 4 and set(pooled["status"]) == {"unresolved"}
    assert set(pooled["note"]) == {"needs a grid of >= 2 taus"}


def test_cli_counts_reported_and_unresolved_rows_apart_and_exits_0(capsys):
    assert main(FLAT) == 0
    captured = capsys.readouterr()
    rows = pl.read_csv(captured.out.encode())
    assert rows.columns == ["kind", "claim", "condition", "metric", "value", "expected",
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
