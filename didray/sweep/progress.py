"""A Tune callback on the driver: prints progress and keeps steps/trials Parquet up to date.

It is pickled with the Tuner, so a restored sweep gets it back; it then reloads the rows
already on disk instead of starting empty, and later rows for the same (trial, step) win.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import polars as pl
from ray import tune

from didray.config.search import DATA_SEED
from didray.config.trial import dataset_key, setting_axes
from didray.files import seal_path
from didray.metrics import FINAL, lookup, step_values
from didray.storage import Storage
from didray.sweep.results import read_parquet, rows_frame, write_parquet

AXES = ("beta", "regime", "seed")
SHOWN = ("loss", "rewards/accuracies", "rewards/margins", "did/entropy")


def registered(result: dict, table: str) -> dict:
    """The entries of a Tune result that are registered columns of `table` (didray.metrics):
    Tune's own bookkeeping (time, pid, config, Train's checkpoint dir) is not a metric."""
    return {k: v for k, v in result.items()
            if (m := lookup(k)) is not None and table in m.tables
            and isinstance(v, int | float | str)}


def last_report(metrics: dict) -> dict:
    """A trial row's view of its latest report: step, node and `final/<metric>`."""
    return {"step": int(metrics["step"]), "node_id": metrics.get("node_id"),
            **{f"{FINAL}{k}": v for k, v in metrics.items() if k in step_values()}}


def sealed(directory: Path, *names: str) -> list[Path]:
    """Results tables in `directory` and their seals, as `Storage.push` copies them."""
    return [p for name in names for p in (directory / name, seal_path(directory / name))]


def _read_rows(path: Path, sweep_dir: Path) -> list[dict]:
    return read_parquet(path, sweep_dir).to_dicts() if path.exists() else []


class ResultsWriter(tune.Callback):
    """steps.parquet: one row per reported step; trials.parquet: one row per trial."""

    def __init__(self, sweep_dir: Path, steps: int, regimes: dict[str, dict],
                 flush_every_s: float = 5.0, storage: Storage | None = None) -> None:
        self.sweep_dir, self.steps, self.regimes = sweep_dir, steps, regimes
        self.storage = storage or Storage(None, sweep_dir.parent)
        self.flush_every_s = flush_every_s
        self._steps: dict[tuple[str, int], dict] | None = None
        self._trials: dict[str, dict] = {}
        self._flushed = 0.0

    def _locate(self, trial) -> None:
        """Follow the sweep to where Tune now keeps it: a moved or copied sweep resumes there,
        while this writer (pickled with the Tuner) still holds the old path. A remote storage's
        sweep stays where it was written (`didray.sweep.state.plan`)."""
        if self.storage.remote:
            return
        sweep_dir = Path(trial.storage.experiment_fs_path).parent
        if sweep_dir != self.sweep_dir:
            self.sweep_dir, self._steps = sweep_dir, None
            self.storage = Storage(None, sweep_dir.parent)

    def _load(self, trial) -> None:
        self._locate(trial)
        if self._steps is None:
            d = self.sweep_dir
            self._steps = {(r["trial_id"], r["step"]): r
                           for r in _read_rows(d / "steps.parquet", d)}
            self._trials = {r["trial_id"]: r for r in _read_rows(d / "trials.parquet", d)}

    def _axes(self, trial) -> dict:
        axes = {k: trial.config[k] for k in AXES}
        settings = setting_axes(trial.config)
        return {"trial_id": trial.trial_id, **axes, **settings,
                **self.regimes[dataset_key(axes["regime"], settings.get(DATA_SEED))]}

    def _trial_row(self, trial, status: str, **extra) -> None:
        row = {**self._trials.get(trial.trial_id, {}), **self._axes(trial), "status": status}
        self._trials[trial.trial_id] = {**row, **extra}

    def _report_row(self, trial, metrics: dict) -> None:
        """The trial row's `final/` columns become this report's, the previous report's
        dropped: a report without the exact evaluation (eval.every) leaves final/did/entropy
        empty rather than an older step's value."""
        row = self._trials.get(trial.trial_id, {})
        self._trials[trial.trial_id] = {k: v for k, v in row.items() if not k.startswith(FINAL)}
        self._trial_row(trial, "RUNNING", **last_report(metrics))

    def flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._flushed < self.flush_every_s:
            return
        write_parquet(rows_frame(list(self._steps.values())), self.sweep_dir / "steps.parquet")
        write_parquet(rows_frame(list(self._trials.values())), self.sweep_dir / "trials.parquet")
        self.storage.push(*sealed(self.sweep_dir, "steps.parquet", "trials.parquet"))
        self._flushed = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._load(trial)
        self._trial_row(trial, "RUNNING")
        shown = {**{k: trial.config[k] for k in AXES}, **setting_axes(trial.config)}
        axes = " ".join(f"{k}={v}" for k, v in shown.items())
        print(f"[didray] trial {trial.trial_id} started: {axes}", file=sys.stderr, flush=True)
        self.flush(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._load(trial)
        if result.get("final"):
            self._trial_row(trial, "RUNNING", **registered(result, "trials"))
            return
        metrics = registered(result, "steps")
        step = int(metrics["step"])
        self._steps[trial.trial_id, step] = {**self._axes(trial), **metrics}
        self._report_row(trial, metrics)
        shown = " ".join(f"{k}={metrics[k]:.3f}" for k in SHOWN if k in metrics)
        print(f"[didray]   {trial.trial_id} step {step}/{self.steps} {shown}",
              file=sys.stderr, flush=True)
        self.flush()

    def merge_evals(self, trial) -> None:
        """evals.parquet gathers the per-trial estimate files the trials write themselves
        (on a remote storage, `trial`'s part is pulled: it may come from another node; the
        others were pulled as they finished, or when the driver started)."""
        self.storage.pull(*sealed(self.sweep_dir / "evals", f"{trial.trial_id}.parquet"))
        parts = sorted((self.sweep_dir / "evals").glob("*.parquet"))
        if parts:
            frames = [read_parquet(p, self.sweep_dir) for p in parts]
            write_parquet(pl.concat(frames, how="diagonal"), self.sweep_dir / "evals.parquet")
            self.storage.push(*sealed(self.sweep_dir, "evals.parquet"))

    def take_history(self, trial) -> None:
        """A finished trial's reports, from its final checkpoint, replace whatever this driver
        saw live: reports a killed driver never received, or an earlier attempt's, are gone."""
        history = self.sweep_dir / "steps" / f"{trial.trial_id}.parquet"
        self.storage.pull(history, seal_path(history))
        rows = _read_rows(history, self.sweep_dir)
        self._steps = {key: row for key, row in self._steps.items() if key[0] != trial.trial_id}
        self._steps |= {(trial.trial_id, r["step"]): {**self._axes(trial), **r} for r in rows}
        self._report_row(trial, rows[-1])

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        """A trial that ended with its final report finished (TERMINATED). One that ended
        without it was stopped early by the scheduler (ASHA): STOPPED, with the step rows
        seen live, since it wrote no history of its own."""
        self._load(trial)
        if not (trial.last_result or {}).get("final"):
            self._trial_row(trial, "STOPPED", error=None)
            step = self._trials[trial.trial_id].get("step")
            print(f"[didray] trial {trial.trial_id} stopped early by the scheduler at step "
                  f"{step}/{self.steps}", file=sys.stderr, flush=True)
            self.flush(force=True)
            return
        self.merge_evals(trial)
        self.take_history(trial)
        self._trial_row(trial, "TERMINATED", error=None)
        print(f"[didray] trial {trial.trial_id} finished", file=sys.stderr, flush=True)
        self.flush(force=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._load(trial)
        self._trial_row(trial, "ERROR", error=str(trial.error_file or "see Tune logs"))
        print(f"[didray] trial {trial.trial_id} FAILED: {trial.error_file}", file=sys.stderr,
              flush=True)
        self.flush(force=True)

    def on_experiment_end(self, trials, **info) -> None:
        if trials:
            self._load(trials[0])
            self.flush(force=True)
