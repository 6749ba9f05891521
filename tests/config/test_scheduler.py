"""search.scheduler.asha: its metric is one every report carries, and its rungs lie at reports
before the last step (the CI sweep: steps 6, report_every 2, so ASHA may cut at step 4 last)."""

import pytest
from support.schema import CI, errors_of, with_

from didray.config.load import parse_sweep
from didray.sweep.driver import scheduler

ASHA = {"metric": "loss", "mode": "min", "grace_period": 2}


def asha(**fields) -> dict:
    return with_("search.scheduler", {"asha": {**ASHA, **fields}})


def test_asha_becomes_tunes_scheduler_on_steps():
    built = scheduler(parse_sweep(asha(reduction_factor=2)))
    assert (built._time_attr, built._metric, built._metric_op) == ("step", "loss", -1.0)
    # rungs at 2 and 4 (max_t: the last report before step 6); none at the last step
    assert [milestone for milestone, _ in built._brackets[0]._rungs] == [4, 2]
    assert scheduler(parse_sweep(CI)) is None


@pytest.mark.parametrize(("fields", "expected"), [
    ({"metric": "did/entropy"}, "scheduler metric `did/entropy` is not one every report "
                                "carries"),
    ({"metric": "los"}, "did you mean `loss`?"),
    ({"max_t": 6}, "max_t (6) must be <= the last report before train.steps, step 4"),
    ({"grace_period": 4, "max_t": 2}, "grace_period (4) must be <= max_t (2)"),
    ({"grace_period": 5}, "grace_period (5) must be <= max_t (4)"),
    ({"reduction_factor": 1}, "search.scheduler.asha.reduction_factor: must be > 1"),
    ({"mode": "lowest"}, "search.scheduler.asha.mode"),
])
def test_asha_refuses_what_could_never_stop_a_trial_right(fields, expected):
    assert any(expected in e for e in errors_of(asha(**fields))), errors_of(asha(**fields))


def test_asha_needs_a_report_before_the_last_step():
    data = with_("train.report_every", 6, with_("train.checkpoint_every", 6, asha()))
    assert any("train.steps (6) must be > train.report_every (6)" in e
               for e in errors_of(data))


def test_asha_checks_each_value_of_a_steps_axis():
    """train.steps swept: a value too short for grace_period is named at its place."""
    data = asha(grace_period=4)
    data["search"]["train.steps"] = [12, 3]
    assert any(e.startswith("search.train.steps[1]") and "grace_period (4)" in e
               for e in errors_of(data))
