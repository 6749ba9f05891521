"""data.seed as a search axis (docs/design.md §3.7): each value is a replicate dataset of every
regime, built in prepare, and the independent unit the analysis resamples."""

import json

import polars as pl
from support.sweeps import CI, run_here, warm, write_sweep

from didray.analysis import load
from didray.analysis.tables import correlations, regimes

DATA = ["data_did_entropy", "data_pairs", "data_chosen_higher", "data_margin_abs", "data_ess"]


def test_each_data_seed_is_its_own_dataset_and_unit(ci_sweep, warm_cache, tmp_path):
    path = write_sweep(tmp_path, {**CI, "search": {**CI["search"], "regime": ["powerlaw-t1"],
                                                   "data.seed": [0, 1]}})
    assert run_here(["run", str(path), "--storage", str(warm(tmp_path, warm_cache))]) == 0
    trials = pl.read_parquet(tmp_path / "ci/trials.parquet").sort("data.seed", "beta")
    assert trials["status"].to_list() == ["TERMINATED"] * 4
    assert trials["data.seed"].to_list() == [0, 0, 1, 1]
    manifest = json.loads((tmp_path / "ci/manifest.json").read_text())
    entries = manifest["regimes"]
    assert sorted(entries) == ["powerlaw-t1@data.seed=0", "powerlaw-t1@data.seed=1"]
    # data.seed 0 is the file's own data.seed: the CI sweep's dataset, reused from the cache.
    ci = json.loads((ci_sweep[1] / "manifest.json").read_text())["regimes"]["powerlaw-t1"]
    assert entries["powerlaw-t1@data.seed=0"]["data_hash"] == ci["data_hash"]
    assert entries["powerlaw-t1@data.seed=1"]["data_hash"] != ci["data_hash"]
    ci_trials = pl.read_parquet(ci_sweep[1] / "trials.parquet").filter(
        pl.col("regime") == "powerlaw-t1")
    assert trials.filter(pl.col("data.seed") == 0).select(DATA).unique().rows() == \
        ci_trials.select(DATA).unique().rows()
    # Another draw of the same law: same DID entropy (exact, set by tau), other pairs.
    per_seed = trials.select("data.seed", *DATA).unique().sort("data.seed")
    assert per_seed.height == 2 and per_seed["data_did_entropy"].n_unique() == 1
    assert per_seed["data_chosen_higher"].n_unique() == 2
    # Each trial trained on its own seed's data: same beta and seed, different dataset.
    final = trials.group_by("beta").agg(pl.col("final/loss").n_unique())
    assert final["final/loss"].to_list() == [2, 2]
    # The analysis: one regimes row per dataset, and each dataset one unit of the bootstrap.
    results = load(tmp_path / "ci")
    assert regimes(results).select("regime", "data.seed").rows() == [
        ("powerlaw-t1", 0), ("powerlaw-t1", 1)]
    table = correlations(results)
    assert set(table["units"]) == {2} and set(table["n"]) == {4}
