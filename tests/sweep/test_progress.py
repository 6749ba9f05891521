"""ResultsWriter's end of a trial, from the calls Tune makes on the driver: a finished trial
takes the history it wrote; one the scheduler stopped keeps what it reported live."""

from pathlib import Path
from types import SimpleNamespace

import polars as pl

from didray.sweep.progress import ResultsWriter
from didray.sweep.results import read_parquet, write_parquet

REGIMES = {"pg": {"regime_kind": "pg"}}


def tune_trial(sweep_dir: Path, trial_id: str, beta: float) -> SimpleNamespace:
    """What the writer reads of Tune's Trial: id, config, storage, last result."""
    storage = SimpleNamespace(experiment_fs_path=str(sweep_dir / "tune"))
    return SimpleNamespace(trial_id=trial_id, config={"beta": beta, "regime": "pg", "seed": 0},
                           storage=storage, last_result={}, error_file=None)


def report(writer: ResultsWriter, trial, result: dict) -> None:
    writer.on_trial_result(0, [], trial, result)
    trial.last_result = result


def test_a_stopped_trial_keeps_its_live_steps_and_a_finished_one_its_history(tmp_path):
    writer = ResultsWriter(tmp_path, steps=6, regimes=REGIMES)
    cut, done = tune_trial(tmp_path, "cut", 1.0), tune_trial(tmp_path, "done", 0.1)
    for trial in (cut, done):
        writer.on_trial_start(0, [], trial)
    for step in (2, 4):
        report(writer, cut, {"step": step, "loss": 1.0 + step})
        report(writer, done, {"step": step, "loss": 1.0 - step / 10})
    writer.on_trial_complete(0, [], cut)  # ASHA stopped it after step 4: no final report
    report(writer, done, {"step": 6, "loss": 0.4})
    # The finished trial's own history (steps/<id>.parquet) wins over what was seen live.
    history = pl.DataFrame({"step": [2, 4, 6], "loss": [0.8, 0.6, 0.45]})
    write_parquet(history, tmp_path / "steps" / "done.parquet")
    report(writer, done, {"final": True, "did_entropy": 1.5})
    writer.on_trial_complete(0, [], done)

    trials = read_parquet(tmp_path / "trials.parquet", tmp_path).sort("trial_id")
    assert trials.select("trial_id", "status", "step", "final/loss", "did_entropy").rows() == [
        ("cut", "STOPPED", 4, 5.0, None), ("done", "TERMINATED", 6, 0.45, 1.5)]
    steps = read_parquet(tmp_path / "steps.parquet", tmp_path).sort("trial_id", "step")
    assert steps.select("trial_id", "step", "loss").rows() == [
        ("cut", 2, 3.0), ("cut", 4, 5.0), ("done", 2, 0.8), ("done", 4, 0.6),
        ("done", 6, 0.45)]
