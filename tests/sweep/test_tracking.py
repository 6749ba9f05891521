"""Experiment tracking on the CI sweep, on a real local Ray: MLflow with a local file store
and W&B in offline mode, one tracked run per trial grouped by the sweep's name."""

import importlib.util
import sys
from pathlib import Path

import polars as pl
import pytest
from support.sweeps import ROOT, run_here, warm

from didray.config.load import load_sweep
from didray.errors import BadInput
from didray.sweep import tracking

NAME = "ci-tracked"
HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None,
                                  reason="mlflow is not installed (pip install 'didray[mlflow]')")


@pytest.fixture(scope="module")
def tracked(warm_cache, tmp_path_factory) -> tuple[Path, str]:
    """(results directory, MLflow tracking URI) of the CI sweep run with trackers on."""
    root = warm(tmp_path_factory.mktemp("tracked"), warm_cache)
    uri = (root / "mlruns").as_uri()  # file:///...: MLflow's file store
    overrides = [f"name={NAME}", f"tracking.mlflow.tracking_uri={uri}"]
    if HAS_WANDB:
        overrides += ["tracking.wandb.project=didray-test", "tracking.wandb.mode=offline"]
    with pytest.MonkeyPatch.context() as env:
        # MLflow 3 refuses its file store unless asked (the callbacks run in this process).
        env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        code = run_here(["run", str(ROOT / "sweeps/ci.yaml"), "--storage", str(root),
                         *overrides])
    assert code == 0
    return root / NAME, uri


@needs_mlflow
def test_mlflow_one_run_per_trial_tagged_with_its_axes(tracked, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    out, uri = tracked
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[NAME], output_format="list")
    trials = pl.read_parquet(out / "trials.parquet")
    assert len(runs) == trials.height == 4
    tagged = sorted((float(r.data.tags["beta"]), r.data.tags["regime"], int(r.data.tags["seed"]))
                    for r in runs)
    assert tagged == sorted(zip(trials["beta"], trials["regime"], trials["seed"], strict=True))
    assert {r.info.status for r in runs} == {"FINISHED"}


@needs_mlflow
def test_mlflow_loss_history_is_the_trials_reported_steps(tracked, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    out, uri = tracked
    client = mlflow.MlflowClient(uri)
    steps = pl.read_parquet(out / "steps.parquet")
    mlflow.set_tracking_uri(uri)
    for run in mlflow.search_runs(experiment_names=[NAME], output_format="list"):
        tags = run.data.tags
        # Step 0 (pi_ref) is no training report: Tune, and so the tracker, never sees it.
        mine = steps.filter((pl.col("beta") == float(tags["beta"]))
                            & (pl.col("regime") == tags["regime"]), pl.col("step") > 0).sort("step")
        history = sorted(client.get_metric_history(run.info.run_id, "loss"),
                         key=lambda m: m.step)
        # Logged against the DPO step (2, 4, 6), with the values the results hold.
        assert [m.step for m in history] == mine["step"].to_list() == [2, 4, 6]
        assert [m.value for m in history] == pytest.approx(mine["loss"].to_list())


@needs_mlflow
@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install 'didray[wandb]')")
def test_wandb_offline_run_per_trial(tracked):
    out, _ = tracked
    runs = sorted(out.glob("tune/*/wandb/offline-run-*"))
    assert len(runs) == 4, runs


def test_missing_tracker_package_is_bad_input(monkeypatch):
    sweep = load_sweep(ROOT / "sweeps/ci.yaml", ["tracking.mlflow.experiment=x"])
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what Python does: import raises
    with pytest.raises(BadInput, match=r"tracking.mlflow needs .*didray\[mlflow\]"):
        tracking.trackers(sweep)
