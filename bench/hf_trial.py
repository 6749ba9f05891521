"""What an hf trial costs beyond its DPO steps: one SmolLM2 trial on the embedded local Ray.

Runs sweeps/smollm2-cpu.yaml cut to one trial (beta 0.1, regime pg, seed 0) of `--steps` DPO
steps, and prints the trial's phases from `trials.parquet` (time/*_s, the sampled evaluation
on the sampler actor among them), what is left of time/trial_s after them (start-up, reading
the final checkpoint, reporting), its non-training time (time/trial_s less time/steps_s) and
the sweep's end-to-end seconds. Asserts nothing.

    .venv/bin/python bench/hf_trial.py [--steps 2] [--storage DIR] [--name hf-trial]  # repo root

A storage that already holds the sweep's cache (pi_ref dequantised, the pg data, pi_ref's
evaluation samples) makes prepare a cache read: run it twice into one `--storage` and read the
second run (a sweep name already there is refused: give each run its own `--name`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from didray.config.load import load_sweep
from didray.metrics import TIMES
from didray.sweep.driver import run_sweep

ROOT = Path(__file__).parents[1]
FILE = ROOT / "sweeps/smollm2-cpu.yaml"


def overrides(steps: int, storage: Path, name: str) -> list[str]:
    return [f"name={name}", f"storage={storage}", "search.beta=[0.1]", "search.seed=[0]",
            "regimes=[{kind: pg, name: pg}]", f"train.steps={steps}",
            f"train.report_every={steps}", f"train.checkpoint_every={steps}"]


def phases(trial: dict) -> list[tuple[str, float]]:
    """The trial's time/*_s, the rest of time/trial_s, and its non-training seconds."""
    rows = [(m.name, trial[m.name]) for m in TIMES]
    parts = sum(trial[m.name] for m in TIMES if m.name != "time/trial_s")
    return [*rows, ("rest: start-up, checkpoint reads, reporting",
                    trial["time/trial_s"] - parts),
            ("non-training (time/trial_s less time/steps_s)",
             trial["time/trial_s"] - trial["time/steps_s"])]


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--steps", type=int, default=2)
    args.add_argument("--storage", type=Path, default=None)
    args.add_argument("--name", default="hf-trial")
    opts = args.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        changes = overrides(opts.steps, opts.storage or Path(tmp), opts.name)
        sweep = load_sweep(str(FILE), changes)
        started = time.perf_counter()
        out = run_sweep(sweep, source=FILE.read_text(), overrides=changes)
        total = time.perf_counter() - started
        run = json.loads((out / "manifest.json").read_text())["runs"][-1]
        [trial] = pl.read_parquet(out / "trials.parquet").to_dicts()
    rows = [("end to end (run_sweep)", total), ("prepare", run["prepare_s"]),
            ("trials phase", run["trials_s"]), *phases(trial)]
    with pl.Config(fmt_str_lengths=80, tbl_rows=-1):
        print(f"one SmolLM2 trial of {opts.steps} DPO steps ({trial['did_entropy']=:.6f}, "
              f"{trial['instruction_score']=:.6f})")
        print(pl.DataFrame(rows, schema=["what", "seconds"], orient="row"))


if __name__ == "__main__":
    main()
