"""The scorer runs in Ray actors, one per sweep stage, on a real local Ray with a tiny reward
model: the driver never loads it, the trials share one actor, and its dtype is the sweep's.
The trials also share one sampler actor, and train in their Tune trial process."""

import json
import time

import polars as pl
import pytest
import ray
import torch
import yaml
from ray.util.state import list_actors, list_tasks
from support.builders import RM_TEMPLATE, save_plain
from transformers import LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedModel

from didray.cli import main
from didray.eval.scorer_actor import scorer_name
from didray.eval.scorers import RewardModelScorer
from didray.sampling.pool import sampler_name
from didray.sweep import RAY_ENV
from didray.worlds import toy

WORLD = toy.build_world(toy.ToyWorldSpec(n_open_prompts=2, n_fact_prompts=2))


def score_calls(address: str, actors: list[dict], timeout_s: float = 30) -> list[dict]:
    """The scorer actors' score calls, once the trials' shared actor has two (one per trial)
    reported finished: the state API learns of tasks from events flushed every second or so,
    so right after the sweep it may lack the last call (the test was flaky)."""
    shared = {a["actor_id"] for a in actors if a["name"] == scorer_name("scored")}
    deadline = time.monotonic() + timeout_s
    while True:
        calls = list_tasks(address, filters=[("name", "=", "ScorerActor.score")], detail=True)
        done = [c for c in calls if c["actor_id"] in shared and c["state"] == "FINISHED"]
        if len(done) >= 2 or time.monotonic() > deadline:
            return calls
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scored_sweep(tmp_path_factory):
    """A two-trial hf sweep scored by a bfloat16 reward model: (exit code, storage, the model
    classes the driver process built, the scorer actors and their score calls, the sampler
    actors)."""
    root = tmp_path_factory.mktemp("scored")
    save_plain(LlamaForCausalLM, root / "model", tie_word_embeddings=True)
    tokenizer = toy.build_tokenizer()
    tokenizer.chat_template = RM_TEMPLATE
    torch.manual_seed(0)
    save_plain(LlamaForSequenceClassification, root / "rm", tokenizer, num_labels=1)
    (root / "prefs").mkdir()  # the training split, and held-out prompts to evaluate on
    for split, prompts in (("train", WORLD.prompts), ("test", WORLD.heldout_prompts[:2])):
        (root / "prefs" / f"{split}.jsonl").write_text("".join(
            json.dumps({"prompt": p.text, "chosen": "red", "rejected": "blue"}) + "\n"
            for p in prompts))
    sweep = {
        "name": "scored", "world": "hf", "storage": str(root),
        "model": {"hf": {"path": str(root / "model")}},
        "data": {"source": str(root / "prefs"), "pairs_per_prompt": 1},
        "regimes": [{"kind": "offpolicy", "name": "given"}],
        "sampler": {"backend": "transformers", "max_tokens": 4},
        "train": {"steps": 2, "batch_size": 2, "max_prompt_tokens": 24,
                  "max_response_tokens": 5, "report_every": 2, "checkpoint_every": 2},
        "search": {"beta": [0.1, 0.5]},
        "scaling": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 2},
        "eval": {"split": "test", "did_samples": 2, "bootstrap": 10,
                 "scorer": {"kind": "reward_model", "path": str(root / "rm"),
                            "dtype": "bfloat16"}},
    }
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    built = []
    init = PreTrainedModel.__init__

    def recorded(self, *args, **kwargs):  # this process only: Ray workers import afresh
        built.append(type(self).__name__)
        init(self, *args, **kwargs)

    PreTrainedModel.__init__ = recorded
    # Started here, so the sweep leaves it running for the state queries (ours only).
    ray.init(num_cpus=2, runtime_env={"env_vars": RAY_ENV}, logging_level="WARNING")
    try:
        code = main(["run", str(root / "sweep.yaml")])
        here = ray.get_runtime_context().gcs_address  # other Ray instances run on this machine
        actors = list_actors(here, filters=[("class_name", "=", "ScorerActor")], detail=True)
        calls = score_calls(here, actors)
        samplers = list_actors(here, filters=[("class_name", "=", "PooledSampler")])
    finally:
        PreTrainedModel.__init__ = init
        ray.shutdown()
    return code, root, built, actors, calls, samplers


def test_the_driver_never_loads_the_scorer(scored_sweep):
    code, _, built, actors, _, _ = scored_sweep
    assert code == 0
    assert built == []  # no model at all: the scorer (and pi_ref) load in Ray processes
    # Prepare's actor and the trials' one, both released when their stage ended.
    assert len(actors) == 2 and {a["state"] for a in actors} == {"DEAD"}


def test_trials_share_one_named_scorer_actor(scored_sweep):
    _, _, _, actors, calls, _ = scored_sweep
    shared = [a["actor_id"] for a in actors if a["name"] == scorer_name("scored")]
    assert len(shared) == 1
    by_trials = [c for c in calls if c["actor_id"] == shared[0]]
    assert len(by_trials) == 2  # one per trial's evaluation
    # One process served both: the actor never restarted. (Not the calls' worker_pid: the
    # last call's pid may never reach the state API once the stage has ended the actor.)
    assert [int(a["num_restarts"]) for a in actors if a["actor_id"] == shared[0]] == [0]


def test_trials_train_in_their_process_and_share_one_sampler_actor(scored_sweep):
    _, root, _, _, _, samplers = scored_sweep
    # Prepare's actor and the trials' one, reloaded per trial: not one more per trial.
    assert sorted(a["name"] for a in samplers) == ["", sampler_name("scored")]
    trials = pl.read_parquet(root / "scored" / "trials.parquet")
    # Checkpointed through Tune, in its experiment directory: no Ray Train run (train/...).
    assert trials.height == 2 and not any(
        p.startswith("train/") for p in trials["checkpoint_path"])


def test_the_scorer_runs_in_the_sweeps_dtype(scored_sweep):
    _, root, _, _, _, _ = scored_sweep
    [eval_file] = [f for f in (root / "cache" / "eval").glob("*.json")
                   if not f.name.endswith(".integrity.json")]  # not its seal
    ref = json.loads(eval_file.read_text())
    prompts, greedy = ref["prompts"], ref["greedy"]
    torch.set_num_threads(1)  # as the actor, given no CPUs
    as_bf16 = RewardModelScorer(str(root / "rm"), "bfloat16")(prompts, greedy)
    as_fp32 = RewardModelScorer(str(root / "rm"), "float32")(prompts, greedy)
    assert ref["greedy_scores"] == pytest.approx(as_bf16, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(as_bf16, as_fp32, strict=True)) > 1e-4
