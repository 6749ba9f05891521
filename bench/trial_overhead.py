"""What one Tune trial costs beyond its DPO steps, on the embedded local Ray.

Runs a one-trial toy sweep twice, with a short and a long training run, and separates the
per-step cost from the fixed cost of a trial (Tune trial start, Train controller and worker
start-up, model load, checkpoint, final evaluation). Prints a table; asserts nothing.

    .venv/bin/python bench/trial_overhead.py [--short 2] [--long 402] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from statistics import median

import polars as pl
import ray
import yaml

from didray.config.load import parse_sweep
from didray.sweep.driver import run_sweep, start_ray

ROOT = Path(__file__).parents[1]


def one_trial_sweep(steps: int, storage: Path, name: str):
    data = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())
    data.update(name=name, storage=str(storage))
    data["search"] = {"beta": [0.1], "regime": ["pg"]}
    data["train"].update(steps=steps, report_every=steps, checkpoint_every=steps)
    data["eval"] = {"exact": False}  # no enumeration at report time: time the loop alone
    return parse_sweep(data)


def trial_seconds(sweep) -> float:
    run_sweep(sweep, source="bench")
    manifest = json.loads((sweep.storage / sweep.name / "manifest.json").read_text())
    return manifest["runs"][-1]["trials_s"]


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--short", type=int, default=2)
    args.add_argument("--long", type=int, default=402)
    args.add_argument("--repeats", type=int, default=3)
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        start_ray(None)
        init_s = time.perf_counter() - started
        short = median([trial_seconds(one_trial_sweep(opts.short, Path(tmp), f"short{i}"))
                        for i in range(opts.repeats)])
        long = median([trial_seconds(one_trial_sweep(opts.long, Path(tmp), f"long{i}"))
                       for i in range(opts.repeats)])
        ray.shutdown()
    per_step = (long - short) / (opts.long - opts.short)
    rows = [("ray.init (embedded, 2 CPUs)", init_s),
            (f"trial wall, {opts.short} steps", short),
            (f"trial wall, {opts.long} steps", long),
            ("DPO step (toy model, batch 8)", per_step),
            ("fixed cost of one trial", short - opts.short * per_step)]
    print(f"median of {opts.repeats} runs each")
    print(pl.DataFrame(rows, schema=["what", "seconds"], orient="row"))


if __name__ == "__main__":
    main()
