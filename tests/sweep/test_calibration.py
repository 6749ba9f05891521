"""The end-to-end calibration (docs/design.md §1.11): `sweeps/calibration.yaml` (3 powerlaw
levels x 3 training betas, population objective) run through the real sweep code, data ->
train -> eval, and every cell's learned DID entropy held to the closed form computed here from
the world's scores alone. A swapped argument of the evaluation's `did_entropy`, a flipped tilt
or a wrong beta anywhere on the way moves a cell off its closed form."""

from pathlib import Path

import polars as pl
import pytest
import yaml
from support.sweeps import ROOT, run_here

from didray.config.schema import ToyWorldSpec
from didray.core.did import tilt_entropy
from didray.eval.toy import prompt_tables
from didray.worlds import toy

SWEEP = ROOT / "sweeps/calibration.yaml"
CONFIG = yaml.safe_load(SWEEP.read_text())


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> pl.DataFrame:
    storage = tmp_path_factory.mktemp("calibration")
    assert run_here(["run", str(SWEEP), "--storage", str(storage)]) == 0
    trials = pl.read_parquet(Path(storage) / "calibration/trials.parquet")
    world = toy.build_world(ToyWorldSpec(**CONFIG["model"]["toy"]))
    scores = prompt_tables(world).scores[: len(world.prompts)]  # (P_train, R)

    def closed(temperature: float) -> float:  # H(softmax(s / temperature)), mean over prompts
        return float(tilt_entropy(scores, temperature).mean())

    # beta_data is 1 in every regime: the data's tilt is s / tau, the optimum's s / (tau beta).
    return (trials.with_columns(
        data_closed=pl.Series([closed(t) for t in trials["tau"]]),
        closed=pl.Series([closed(t * b) for t, b in zip(trials["tau"], trials["beta"],
                                                         strict=True)]))
        .sort("beta", "data_did_entropy"))


def test_every_cell_lands_on_its_closed_form_optimum(cells):
    assert cells.height == 9 and set(cells["status"]) == {"TERMINATED"}
    # The regimes' tau were solved so that the data encode their level.
    assert cells["data_closed"].to_list() == pytest.approx(cells["data_did_entropy"].to_list(),
                                                           abs=1e-4)
    assert sorted(set(cells["data_did_entropy"].round(6))) == [2.0, 2.75, 3.5]
    # The optimum's column is the closed form, computed the evaluation's way.
    assert cells["optimum_did_entropy"].to_list() == pytest.approx(cells["closed"].to_list(),
                                                                   abs=1e-6)
    gaps = (cells["did_entropy"] - cells["closed"]).abs()
    assert gaps.max() <= 0.3, cells.select("beta", "regime", "closed", "did_entropy")
    assert cells["final/optimum_tv"].max() <= 0.05, cells.select("beta", "regime",
                                                                 "final/optimum_tv")


def test_learned_entropy_rises_with_the_level_at_every_beta(cells):
    for beta, cell in cells.group_by("beta"):
        assert cell.sort("data_did_entropy")["did_entropy"].is_sorted(), beta
    # The closed forms the order is checked against are well apart (>= 0.47 nats), so the
    # order is not won inside the 0.3-nat tolerance.
    closed = cells.group_by("beta").agg(pl.col("closed").sort().diff().min().alias("step"))
    assert closed["step"].min() >= 0.47
