"""What a sweep and a Tune trial cost beyond their DPO steps, on the embedded local Ray.

Runs a toy sweep of `--trials` one-worker trials (seeds 0..n-1, one at a time) twice, with a
short and a long training run, in one storage (the second sweep reuses the first one's caches).
The first table separates what each sweep pays once (ray.init, prepare, Tune's start and end)
from what each trial pays: its fixed cost (start, model and data load, checkpoint, final
evaluation, Tune scheduling it) and the cost of a DPO step. The second sums each phase of the
short sweep's trials from `trials.parquet` (time/*_s). Prints tables; asserts nothing.

    .venv/bin/python bench/trial_overhead.py [--short 2] [--long 202] [--trials 4] [--storage DIR]

A storage holding a cache of the CI world (pi_ref, enumeration, data, reference log-probs)
makes prepare a cache read; without `--storage` a temporary directory starts empty.
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


def run(sweep) -> tuple[dict, pl.DataFrame]:
    """The sweep's run record (prepare_s, trials_s) and its trials table."""
    out = run_sweep(sweep, source="bench")
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["runs"][-1], pl.read_parquet(out / "trials.parquet")


def overheads(n: int, steps: tuple[int, int], short: tuple[dict, pl.DataFrame],
              long: tuple[dict, pl.DataFrame]) -> list[tuple[str, float]]:
    """Per-sweep and per-trial costs. Trials run one at a time, so a sweep's trials phase is
    its trials' own seconds (time/trial_s, start-up included) plus what Tune spends around
    them; the step cost comes from the difference of the two sweeps' trial seconds."""
    trial_s = [float(table["time/trial_s"].sum()) for _, table in (short, long)]
    per_step = (trial_s[1] - trial_s[0]) / (n * (steps[1] - steps[0]))
    return [("prepare (first sweep)", short[0]["prepare_s"]),
            ("prepare (second sweep, cached)", long[0]["prepare_s"]),
            ("Tune start, scheduling and end, per sweep",
             short[0]["trials_s"] - trial_s[0]),
            ("fixed cost of one trial (time/trial_s less its steps)",
             trial_s[0] / n - steps[0] * per_step),
            ("DPO step (toy model, batch 8)", per_step)]


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--short", type=int, default=2)
    args.add_argument("--long", type=int, default=202)
    args.add_argument("--trials", type=int, default=4)
    args.add_argument("--storage", type=Path, default=None)
    opts = args.parse_args()
    n = opts.trials
    with tempfile.TemporaryDirectory() as tmp:
        storage = opts.storage or Path(tmp)
        started = time.perf_counter()
        start_ray(None)
        init_s = time.perf_counter() - started
        try:
            short = run(sweep_of(n, opts.short, storage, "short"))
            long = run(sweep_of(n, opts.long, storage, "long"))
        finally:
            ray.shutdown()
    rows = [("ray.init (embedded), per sweep", init_s),
            *overheads(n, (opts.short, opts.long), short, long)]
    phases = [(m.name, float(short[1][m.name].sum()) / n) for m in TIMES]
    with pl.Config(fmt_str_lengths=80, tbl_rows=-1):
        print(f"{n} one-worker toy trials, one at a time, of {opts.short} and {opts.long} steps")
        print(pl.DataFrame(rows, schema=["what", "seconds"], orient="row"))
        print(f"per trial of the {opts.short}-step sweep (trials.parquet, mean)")
        print(pl.DataFrame(phases, schema=["phase", "seconds"], orient="row"))


if __name__ == "__main__":
    main()
