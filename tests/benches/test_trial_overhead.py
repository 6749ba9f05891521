"""bench/trial_overhead.py keeps working: its arithmetic on hand-made numbers, and a tiny run."""

import importlib.util
import subprocess
import sys

import polars as pl
import pytest
from support.sweeps import ROOT, warm

from didray.metrics import TIMES

spec = importlib.util.spec_from_file_location("trial_overhead",
                                              ROOT / "bench" / "trial_overhead.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_overheads_split_the_sweep_from_the_trial_and_the_step():
    """2 trials of 2 and of 12 steps: their trials take 10 s and 30 s in all, so a step costs
    20 / (2 x 10) = 1 s, a trial's fixed cost 10 / 2 - 2 x 1 = 3 s, and of the short sweep's
    16 s trials phase 16 - 10 = 6 s is Tune's."""
    short = ({"prepare_s": 20.0, "trials_s": 16.0}, pl.DataFrame({"time/trial_s": [4.0, 6.0]}))
    long = ({"prepare_s": 1.5, "trials_s": 38.0}, pl.DataFrame({"time/trial_s": [14.0, 16.0]}))
    assert dict(bench.overheads(2, (2, 12), short, long)) == {
        "prepare (first sweep)": 20.0, "prepare (second sweep, cached)": 1.5,
        "Tune start, scheduling and end, per sweep": 6.0,
        "fixed cost of one trial (time/trial_s less its steps)": 3.0,
        "DPO step (toy model, batch 8)": 1.0}


@pytest.mark.slow  # two sweeps on an embedded Ray, in a subprocess the tiers cannot read
def test_a_tiny_run_prints_both_tables(warm_cache, tmp_path):
    done = subprocess.run([sys.executable, "bench/trial_overhead.py", "--short", "1", "--long",
                           "3", "--trials", "2", "--storage", str(warm(tmp_path, warm_cache))],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("ray.init (embedded), per sweep", "Tune start, scheduling and end, per sweep",
                "fixed cost of one trial", "DPO step", *(m.name for m in TIMES)):
        assert row in done.stdout, row
