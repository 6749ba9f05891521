"""A trial's own settings: the sweep's, with its axis values put in, each value typed by its
setting's field once when the sweep is validated."""

import pytest
from pydantic import ValidationError
from support.schema import CI, errors_of, swept

from didray.config.load import parse_sweep
from didray.config.trial import dataset_key, setting_axes, with_axes


def test_swept_values_land_in_the_trials_settings_and_nothing_else_moves():
    sweep = parse_sweep(swept(**{"train.lr": ["1e-3", "1e-2"], "eval.judge.k": [4, 8]}))
    lr = sweep.search.axes["train.lr"][1]
    assert lr == 0.01  # typed by train.lr's field when the sweep was validated
    train, eval = with_axes(sweep.train, sweep.eval, {"train.lr": lr, "eval.judge.k": 8})
    assert (train.lr, eval.judge.k) == (0.01, 8)
    assert train.model_dump() == {**sweep.train.model_dump(), "lr": 0.01}
    assert eval.judge.diversity_weight == sweep.eval.judge.diversity_weight
    assert (sweep.train.lr, sweep.eval.judge.k) == (0.002, 32)  # the shared ones stay


def test_a_drawn_value_is_typed_by_its_field():
    sweep = parse_sweep(CI)
    assert with_axes(sweep.train, sweep.eval, {"train.steps": 8.0})[0].steps == 8
    with pytest.raises(ValidationError, match="fractional part"):
        with_axes(sweep.train, sweep.eval, {"train.steps": 7.5})


def test_a_trial_config_holds_its_axes_beside_beta_regime_and_seed():
    config = {"beta": 0.1, "regime": "pg", "seed": 0, "point": 3, "train.lr": 0.01,
              "eval.judge.k": 8}
    assert setting_axes(config) == {"train.lr": 0.01, "eval.judge.k": 8}


def test_a_bad_value_is_refused_at_its_place_once_for_the_sweep():
    errors = errors_of(swept(**{"train.lr": [1e-3, 1e-2, 0], "eval.judge.k": [4, 8]}))
    assert errors == ["search.train.lr[2]: must be > 0 (got 0)"]


def test_every_grid_point_is_held_to_the_rules_across_fields():
    # steps 6 is fine with no warmup, warmup 10 with 20 steps: not the two together
    data = swept(**{"train.steps": [20, 6], "train.warmup_steps": [0, 10]})
    data["train"] = {**data["train"], "steps": 20}
    assert errors_of(data) == ["search: with train.steps=6, train.warmup_steps=10: "
                               "warmup_steps (10) must be < steps (6): training would end "
                               "before the warmup does"]


def test_a_grid_is_checked_on_its_points_not_on_the_files_values():
    # ci.yaml's 6 steps would not hold warmup 10, but no trial runs 6 steps
    sweep = parse_sweep(swept(**{"train.steps": [12, 20], "train.warmup_steps": [0, 10]}))
    assert sweep.trial_count() == 2 * 2 * 2 * 2


def test_random_mode_checks_each_value_with_the_files_settings():
    data = swept(mode="random", num_samples=3,
                 **{"train.warmup_steps": {"choice": [0, 6]}})
    assert errors_of(data) == ["search.train.warmup_steps.choice[1]: warmup_steps (6) must be "
                               "< steps (6): training would end before the warmup does"]


def test_a_data_seed_picks_the_trials_dataset_and_changes_no_setting():
    sweep = parse_sweep(swept(**{"data.seed": [0, 5]}))
    config = {"beta": 0.1, "regime": "pg", "seed": 0, "data.seed": 5}
    assert setting_axes(config) == {"data.seed": 5}  # a column of its results
    train, eval = with_axes(sweep.train, sweep.eval, setting_axes(config))
    assert (train, eval) == (sweep.train, sweep.eval)
    assert dataset_key("pg", 5) == "pg@data.seed=5"
    assert dataset_key("pg", None) == "pg"  # no axis: the regime's one dataset
