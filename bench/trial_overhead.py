"""What a Tune trial costs beyond its DPO steps, on the embedded local Ray.

Runs a toy sweep of `--trials` one-worker trials (seeds 0..n-1, one at a time) twice, with a
short and a long training run, and separates the per-step cost from the fixed cost of a trial
(trial start, model and data load, checkpoint, final evaluation). A second table sums each
phase of the short sweep from `trials.parquet` (time/*_s). Prints tables; asserts nothing.

    .venv/bin/python bench/trial_overhead.py [--short 2] [--long 202] [--trials 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl
import ray
import yaml

from didray.config.load import parse_sweep
from didray.metrics import TIMES
from didray.sweep.driver import run_sweep, start_ray

ROOT = Path(__file__).parents[1]


def sweep_of(trials: int, steps: int, storage: Path, name: str):
    data = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())
    data.update(name=name, storage=str(storage))
    data["search"] = {"beta": [0.1], "regime": ["pg"], "seed": list(range(trials))}
    data["train"].update(steps=steps, report_every=steps, checkpoint_every=steps)
    data["scaling"]["max_concurrent_trials"] = 1
    data["eval"] = {"exact": False}  # no enumeration at report time: time the loop alone
    return parse_sweep(data)


def run(sweep) -> tuple[float, pl.DataFrame]:
    """Seconds the trials took (after prepare) and the sweep's trials table."""
    run_sweep(sweep, source="bench")
    out = sweep.storage / sweep.name
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["runs"][-1]["trials_s"], pl.read_parquet(out / "trials.parquet")


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--short", type=int, default=2)
    args.add_argument("--long", type=int, default=202)
    args.add_argument("--trials", type=int, default=4)
    opts = args.parse_args()
    n = opts.trials
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        start_ray(None)
        init_s = time.perf_counter() - started
        short, table = run(sweep_of(n, opts.short, Path(tmp), "short"))
        long, _ = run(sweep_of(n, opts.long, Path(tmp), "long"))
        ray.shutdown()
    per_step = (long - short) / (n * (opts.long - opts.short))
    rows = [("ray.init (embedded)", init_s),
            (f"{n} trials of {opts.short} steps", short),
            (f"{n} trials of {opts.long} steps", long),
            ("DPO step (toy model, batch 8)", per_step),
            ("fixed cost of one trial", short / n - opts.short * per_step)]
    print(f"{n} one-worker toy trials, one at a time")
    print(pl.DataFrame(rows, schema=["what", "seconds"], orient="row"))
    phases = [(m.name, float(table[m.name].sum()) / n) for m in TIMES]
    print(f"per trial of the {opts.short}-step sweep (trials.parquet, mean)")
    print(pl.DataFrame(phases, schema=["phase", "seconds"], orient="row"))


if __name__ == "__main__":
    main()
