"""bench/hf_trial.py's arithmetic on hand-made numbers (its run is a SmolLM2 sweep: by hand)."""

import importlib.util

from support.sweeps import ROOT

spec = importlib.util.spec_from_file_location("hf_trial", ROOT / "bench" / "hf_trial.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_phases_leave_the_rest_and_the_non_training_seconds():
    """A 40 s trial of setup 3, steps 17, final evaluation 4, checkpoints 1 and sampled
    evaluation 12: 3 s are in no phase (start-up, reporting), 23 s are not training."""
    trial = {"time/setup_s": 3.0, "time/steps_s": 17.0, "time/eval_s": 4.0,
             "time/checkpoint_s": 1.0, "time/sampled_eval_s": 12.0, "time/trial_s": 40.0}
    got = dict(bench.phases(trial))
    assert got["rest: start-up, checkpoint reads, reporting"] == 3.0
    assert got["non-training (time/trial_s less time/steps_s)"] == 23.0
    assert got["time/steps_s"] == 17.0
