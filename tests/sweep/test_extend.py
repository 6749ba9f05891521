"""Growing sweeps on a real local Ray: a second sweep reuses the first one's caches from the
shared store, and `--extend` runs only the new search points of a finished sweep."""

import json
import shutil
from pathlib import Path

import polars as pl
from support.sweeps import CI, comparable, run_cli, without_empty, write_sweep


def cached_counts(manifest: dict) -> dict[str, int]:
    """Computations per kind of cache entry (pi_ref, enumeration, data, ref)."""
    counts: dict[str, int] = {}
    for key, n in manifest["cache_computations"].items():
        counts[key.split("/")[0]] = counts.get(key.split("/")[0], 0) + n
    return counts


def test_a_second_sweep_reuses_the_first_ones_data_and_reference_caches(ci_sweep, tmp_path):
    """Same world, regime and data settings under another sweep and regime name: nothing is
    sampled or computed again, and the trial trains to the first sweep's numbers."""
    _, clean = ci_sweep
    regimes = [{**r, "name": "baseline"} if r["name"] == "pg" else r for r in CI["regimes"]]
    path = write_sweep(tmp_path, {**CI, "name": "again", "regimes": regimes,
                                  "search": {"beta": [0.1], "regime": ["baseline"]}})
    code, log, _ = run_cli(["run", str(path), "--storage", str(clean.parent)])
    assert code == 0, log
    assert "sampler: starting" not in log
    out = clean.parent / "again"
    manifest = json.loads((out / "manifest.json").read_text())
    assert cached_counts(manifest) == {"pi_ref": 0, "enumeration": 0, "data": 0, "ref": 0}
    first = json.loads((clean / "manifest.json").read_text())["regimes"]["pg"]
    assert manifest["regimes"]["baseline"]["ref_file"] == first["ref_file"]
    got = without_empty(comparable(out, "trials").with_columns(regime=pl.lit("pg")))
    want = without_empty(comparable(clean, "trials").filter(pl.col("beta") == 0.1,
                                                            pl.col("regime") == "pg"))
    assert sorted(got.columns) == sorted(want.columns)
    assert got.select(want.columns).equals(want)


def old_rows(out: Path, name: str, ids: list[str], columns: list[str]) -> pl.DataFrame:
    """The rows of trials `ids`, in one order whatever order the table holds them in."""
    frame = pl.read_parquet(out / f"{name}.parquet").filter(pl.col("trial_id").is_in(ids))
    return frame.select(columns).sort(columns)


def test_extend_runs_only_the_new_points_and_keeps_the_old_rows(ci_sweep, tmp_path):
    """One more beta on a copy of the finished CI sweep (its storage, store included): two new
    trials run, the old rows stay exactly as they were."""
    _, clean = ci_sweep
    storage = tmp_path / "storage"
    shutil.copytree(clean.parent / "cache", storage / "cache")
    shutil.copytree(clean, storage / "ci")
    ids = pl.read_parquet(clean / "trials.parquet")["trial_id"].to_list()
    path = write_sweep(tmp_path, {**CI, "search": {**CI["search"], "beta": [0.1, 0.5, 1.0]}})
    code, log, _ = run_cli(["run", str(path), "--storage", str(storage), "--extend"])
    assert code == 0, log
    assert "sampler: starting" not in log
    started = [line for line in log.splitlines() if " started: " in line]
    assert len(started) == 2 and all("beta=1.0 " in line for line in started), started
    out = storage / "ci"
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials.height == 6 and set(trials["status"]) == {"TERMINATED"}
    assert sorted(trials.filter(~pl.col("trial_id").is_in(ids))["regime"]) == [
        "pg", "powerlaw-t1"]
    for name in ("trials", "steps", "evals"):
        columns = pl.read_parquet(clean / f"{name}.parquet").columns
        assert old_rows(out, name, ids, columns).equals(old_rows(clean, name, ids, columns))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["dir"] for e in manifest["extensions"]] == ["tune-2"]
    assert manifest["runs"][-1]["extended"] and manifest["runs"][-1]["status"] == "finished"
    assert set(manifest["cache_computations"].values()) == {1}  # nothing computed twice
