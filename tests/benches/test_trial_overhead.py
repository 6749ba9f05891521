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
    """3 trials of 2 steps take 4, 5 and 6 s of their own (15 s) in a 25 s trials phase, and
    6 and 7 s pass between their ends: a trial's wall time is 6.5 s, of which 6.5 - 5 = 1.5 s is
    Ray/Tune's, and 25 - 3 x 6.5 = 5.5 s is the sweep's Tune start and end. 3 trials of 12
    steps take 45 s: a step costs 30 / (3 x 10) = 1 s, a trial's fixed cost 15 / 3 - 2 = 3 s."""
    short = ({"prepare_s": 20.0, "trials_s": 25.0},
             pl.DataFrame({"time/trial_s": [4.0, 5.0, 6.0]}), [6.0, 7.0])
    long = ({"prepare_s": 1.5, "trials_s": 60.0},
            pl.DataFrame({"time/trial_s": [14.0, 15.0, 16.0]}), [16.0, 16.0])
    assert dict(bench.overheads(3, (2, 12), short, long)) == {
        "prepare (first sweep)": 20.0, "prepare (second sweep, cached)": 1.5,
        "Tune start and end, per sweep": 5.5,
        "Ray/Tune per trial (trial to trial, less time/trial_s)": 1.5,
        "fixed cost in a trial (time/trial_s less its steps)": 3.0,
        "DPO step (toy model, batch 8)": 1.0}


@pytest.mark.slow  # two sweeps on an embedded Ray, in a subprocess the tiers cannot read
def test_a_tiny_run_prints_both_tables(warm_cache, tmp_path):
    done = subprocess.run([sys.executable, "bench/trial_overhead.py", "--short", "1", "--long",
                           "3", "--trials", "2", "--storage", str(warm(tmp_path, warm_cache))],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for row in ("ray.init (embedded), per sweep", "Tune start and end, per sweep",
                "Ray/Tune per trial", "fixed cost in a trial", "DPO step",
                *(m.name for m in TIMES if "toy" in m.worlds)):
        assert row in done.stdout, row
