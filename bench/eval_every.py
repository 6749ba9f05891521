"""What `eval.every` saves: toy trials at the demo's settings (sweeps/toy.yaml, one regime)
with the exact evaluation at every report against every N-th report, on the embedded local Ray.

Sweeps of `--trials` one-worker trials (seeds 0..n-1, one at a time) alternate between the
settings for `--rounds` rounds, so a load that comes and goes on a shared machine falls on
both. Prints the per-trial medians of time/trial_s and time/eval_s (trials.parquet) and
whether each seed's final results are identical across the settings.

    .venv/bin/python bench/eval_every.py [--every 1 4] [--report-every 5] [--trials 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl
import ray
import yaml

from didray.config.load import parse_sweep
from didray.sweep.driver import run_sweep, start_ray

ROOT = Path(__file__).parents[1]
# The trial's results: they must not depend on how often the reports were evaluated.
RESULTS = ("did_entropy", "instruction_score", "qa_accuracy", "dpo_loss", "final/loss")


def sweep_of(every: int, report_every: int, trials: int, storage: Path, name: str):
    data = yaml.safe_load((ROOT / "sweeps/toy.yaml").read_text())
    data.update(name=name, storage=str(storage))
    data["search"] = {"beta": [1.0], "regime": ["H1.5"], "seed": list(range(trials))}
    data["train"].update(report_every=report_every, checkpoint_every=None)
    data["scaling"]["max_concurrent_trials"] = 1
    data["eval"] = {"exact": True, "every": every}
    return parse_sweep(data)


def run(sweep) -> pl.DataFrame:
    run_sweep(sweep, source="bench")
    return pl.read_parquet(sweep.storage / sweep.name / "trials.parquet")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--every", type=int, nargs="+", default=[1, 4])
    args.add_argument("--report-every", type=int, default=5)
    args.add_argument("--trials", type=int, default=2)
    args.add_argument("--rounds", type=int, default=2)
    opts = args.parse_args()
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        start_ray(None)
        for r in range(opts.rounds):
            for every in opts.every:
                sweep = sweep_of(every, opts.report_every, opts.trials, Path(tmp),
                                 f"every{every}-r{r}")
                frames.append(run(sweep).with_columns(every=every))
        ray.shutdown()
    trials = pl.concat(frames, how="diagonal")
    steps = sweep.train.steps
    print(f"toy trials of {steps} steps, reports every {opts.report_every}, one at a time; "
          f"{opts.rounds} rounds x {opts.trials} seeds per setting")
    summary = trials.group_by("every").agg(
        trials=pl.len(),
        trial_s=pl.col("time/trial_s").median(),
        eval_s=pl.col("time/eval_s").median(),
        steps_s=pl.col("time/steps_s").median(),
    ).sort("every")
    print(summary.insert_column(1, pl.Series(
        "evaluations", [evaluations(steps, opts.report_every, e) for e in summary["every"]])))
    finals = trials.select("every", "seed", *RESULTS).unique().group_by("seed").agg(
        pl.struct(*RESULTS).n_unique().alias("distinct"))
    print("final results identical across settings for every seed:",
          (finals["distinct"] == 1).all())


def evaluations(steps: int, report_every: int, every: int) -> int:
    """Exact evaluations of one trial: at every `every`-th report and at the last step."""
    return (steps - 1) // (report_every * every) + 1


if __name__ == "__main__":
    main()
