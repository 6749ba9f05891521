"""Where a trial trains and what its Tune bundle holds (docs/design.md §3, steps 3 and 4), and
how the sampler pool splits rows into calls: no Ray, no sweep."""

import pytest

from didray.config.schema import Eval, SamplerSettings, Scaling, Train
from didray.config.trial import TrialSpec
from didray.sampling.pool import call_shards
from didray.storage import Storage
from didray.sweep.trial import in_trial_process, trial_resources


def spec(tmp_path, world: str, workers: int = 1, cpus: float = 2, actor_cpus: float = 1,
         actor_gpus: float = 0) -> TrialSpec:
    return TrialSpec(
        sweep="s", world=world, train=Train(), eval=Eval(),
        sampler=SamplerSettings(cpus_per_actor=actor_cpus, gpus_per_actor=actor_gpus),
        scaling=Scaling(workers_per_trial=workers, cpus_per_worker=cpus), dtype="float32",
        gradient_checkpointing=False, storage=Storage.of(str(tmp_path)),
        sweep_dir=tmp_path / "s", world_dir=tmp_path / "world", regimes={})


@pytest.mark.parametrize(("world", "workers", "actor_gpus", "here"), [
    ("toy", 1, 0, True), ("hf", 1, 0, True), ("hf", 2, 0, False), ("toy", 2, 0, False),
    ("hf", 1, 1, False)])
def test_one_worker_trials_train_in_their_tune_process(tmp_path, world, workers, actor_gpus,
                                                        here):
    # A sampler on GPUs keeps the Train run's path: its trial holds nothing while the
    # sampler's own actor holds the GPU.
    assert in_trial_process(spec(tmp_path, world, workers, actor_gpus=actor_gpus)) is here


@pytest.mark.parametrize(("world", "cpus", "actor_cpus", "held"), [
    ("hf", 1, 2, 2), ("hf", 2, 1, 2), ("toy", 1, 2, 1)])
def test_an_hf_trial_holds_the_cpus_its_shared_sampler_draws_with(tmp_path, world, cpus,
                                                                   actor_cpus, held):
    bundle = trial_resources(spec(tmp_path, world, cpus=cpus, actor_cpus=actor_cpus))
    assert bundle == {"CPU": held, "GPU": 0}


@pytest.mark.parametrize(("rows", "actors", "shown", "calls"), [
    (4, 1, True, [slice(0, 4)]),  # SmolLM2's 4 prompts: one call, not 4 of one prompt
    (8, 2, False, [slice(0, 8)]),
    (20, 2, False, [slice(0, 10), slice(10, 20)]),
    (64, 1, True, [slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 64)]),
    (17, 1, True, [slice(0, 8), slice(8, 17)])])
def test_calls_carry_at_least_eight_rows(rows, actors, shown, calls):
    assert call_shards(rows, actors, shown) == calls
