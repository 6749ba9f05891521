"""What a sweep and a Tune trial cost beyond their DPO steps, on the embedded local Ray.

Runs a toy sweep of `--trials` one-worker trials (seeds 0..n-1, one at a time) twice, with a
short and a long training run, in one storage (the second sweep reuses the first one's caches).
The first table separates what each sweep pays once (ray.init, prepare, Tune's start and end)
from what each trial pays: Ray/Tune's share (collecting a trial's result, resetting the reused
trial process, starting the next trial: the time between two trials' ends less the trial's own
`time/trial_s`, medians), the fixed cost inside a trial (model and data load, checkpoint, final
evaluation) and the cost of a DPO step (from the two sweeps' trial seconds). The second sums
each phase of the short sweep's trials from `trials.parquet` (time/*_s). Prints tables;
asserts nothing.

    .venv/bin/python bench/trial_overhead.py [--short 2] [--long 202] [--trials 6] [--storage DIR]

A storage holding a cache of the CI world (pi_ref, enumeration, data, reference log-probs)
makes prepare a cache read; without `--storage` a temporary directory starts empty.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
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


Run = tuple[dict, pl.DataFrame, list[float]]


def run(sweep) -> Run:
    """The sweep's run record (prepare_s, trials_s), its trials table and the seconds between
    consecutive trials' ends (each trial writes its done/ file last, `didray.sweep.trial`)."""
    out = run_sweep(sweep, source="bench")
    manifest = json.loads((out / "manifest.json").read_text())
    ends = sorted(path.stat().st_mtime for path in (out / "done").glob("*.json"))
    return (manifest["runs"][-1], pl.read_parquet(out / "trials.parquet"),
            [b - a for a, b in itertools.pairwise(ends)])


def overheads(n: int, steps: tuple[int, int], short: Run, long: Run
              ) -> list[tuple[str, float]]:
    """Per-sweep and per-trial costs. Trials run one at a time, so from one trial's end to the
    next one's is the next trial's wall time: its own seconds (time/trial_s) and Ray/Tune's
    share around them. The trials phase is n of those and Tune's start and end; the step cost
    comes from the difference of the two sweeps' trial seconds."""
    trial_s = [float(table["time/trial_s"].sum()) for _, table, _ in (short, long)]
    per_step = (trial_s[1] - trial_s[0]) / (n * (steps[1] - steps[0]))
    wall = statistics.median(short[2])
    return [("prepare (first sweep)", short[0]["prepare_s"]),
            ("prepare (second sweep, cached)", long[0]["prepare_s"]),
            ("Tune start and end, per sweep", short[0]["trials_s"] - n * wall),
            ("Ray/Tune per trial (trial to trial, less time/trial_s)",
             wall - float(short[1]["time/trial_s"].median())),
            ("fixed cost in a trial (time/trial_s less its steps)",
             trial_s[0] / n - steps[0] * per_step),
            ("DPO step (toy model, batch 8)", per_step)]


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--short", type=int, default=2)
    args.add_argument("--long", type=int, default=202)
    args.add_argument("--trials", type=int, default=6)
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
    phases = [(m.name, float(short[1][m.name].sum()) / n) for m in TIMES if "toy" in m.worlds]
    with pl.Config(fmt_str_lengths=80, tbl_rows=-1):
        print(f"{n} one-worker toy trials, one at a time, of {opts.short} and {opts.long} steps")
        print(pl.DataFrame(rows, schema=["what", "seconds"], orient="row"))
        print(f"per trial of the {opts.short}-step sweep (trials.parquet, mean)")
        print(pl.DataFrame(phases, schema=["phase", "seconds"], orient="row"))


if __name__ == "__main__":
    main()
