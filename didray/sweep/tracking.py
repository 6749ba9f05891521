"""Experiment trackers (the sweep file's `tracking:`): Ray Tune's MLflow and W&B callbacks, one
tracked run per trial, grouped by sweep and labelled with the trial's axes.

The callbacks run in the sweep's driver and are pickled with the Tuner, so a resumed sweep
logs to the trackers it started with. mlflow and wandb are optional extras: imported only when
the sweep asks for them.
"""

from __future__ import annotations

import os

# Ray's module imports mlflow only when a callback is made.
from ray.air.integrations.mlflow import MLflowLoggerCallback

from didray.config.schema import Sweep
from didray.metrics import step_values
from didray.preflight import trackers_ready
from didray.sweep.progress import AXES


def trackers(sweep: Sweep) -> list:
    """The Tune callbacks for `sweep.tracking`; empty when it names no tracker. A tracker that
    cannot start is refused first (`preflight.trackers_ready`)."""
    trackers_ready(sweep)
    tracking, made = sweep.tracking, []
    if tracking.mlflow:
        made.append(AxesMLflowCallback(tracking_uri=tracking.mlflow.tracking_uri,
                                       experiment_name=tracking.mlflow.experiment or sweep.name))
    if tracking.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        w = tracking.wandb
        mode = {}  # unset: WANDB_MODE or W&B's default
        if w.mode:
            # Ray skips its API-key lookup (which fails without a key) only when the driver's
            # WANDB_MODE says offline/disabled; the logging actors take it as wandb.init's mode.
            os.environ["WANDB_MODE"] = w.mode
            mode = {"mode": w.mode}
        # Trial configs (beta, regime, seed) become each W&B run's config.
        made.append(WandbLoggerCallback(project=w.project, group=w.group or sweep.name,
                                        **mode))
    return made


class AxesMLflowCallback(MLflowLoggerCallback):
    """Tags each trial's run with its axes (Tune logs them only as params, which the MLflow UI
    does not group by) and logs metrics against the DPO step."""

    def log_trial_start(self, trial):
        if trial not in self._trial_runs:
            tags = {**self.tags, "trial_name": str(trial),
                    **{axis: str(trial.config[axis]) for axis in AXES}}
            run = self.mlflow_util.start_run(tags=tags, run_name=str(trial))
            self._trial_runs[trial] = run.info.run_id
        super().log_trial_start(trial)

    def log_trial_result(self, iteration, trial, result):
        if result.get("final"):
            # It repeats the last step's metrics (a scheduler needs them in every result),
            # which that step's report logged already: once more would log the step twice.
            repeated = set(step_values())
            result = {k: v for k, v in result.items() if k not in repeated}
        # Tune's default x-axis is its report count; didray reports every k steps.
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=result,
                                     step=int(result.get("step", iteration)))
