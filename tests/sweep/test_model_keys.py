"""Cache keys of the hf world follow the models' weights: a local directory's files (pi_ref's
and the scorer's), and pi_ref's hub revision."""

import json
import shutil
from pathlib import Path

import torch
from support.builders import hub_snapshot, save_plain
from transformers import LlamaForCausalLM

from didray.config.schema import Sweep
from didray.sweep.prepare import Caches, hf_world


def world(root: Path, model: dict, scorer: str):
    """`hf_world` of a sweep over `model` (the `model.hf` section) scored by `scorer`."""
    data = root / "prefs"
    data.mkdir(exist_ok=True)
    for split, prompt in (("train", "p"), ("test", "q")):
        (data / f"{split}.jsonl").write_text(
            json.dumps({"prompt": prompt, "chosen": "a", "rejected": "b"}) + "\n")
    sweep = Sweep.model_validate({
        "name": "keys", "world": "hf", "storage": str(root), "model": {"hf": model},
        "data": {"source": str(data)}, "regimes": [{"kind": "offpolicy", "name": "given"}],
        "search": {"beta": [0.1]},
        "eval": {"split": "test", "scorer": {"kind": "reward_model", "path": scorer}}})
    return hf_world(sweep, Caches(), lambda _: None)


def test_local_weights_replaced_in_place_change_the_keys(tiny_llama, tmp_path):
    model = shutil.copytree(tiny_llama, tmp_path / "model")
    scorer = shutil.copytree(tiny_llama, tmp_path / "scorer")
    first = world(tmp_path, {"path": str(model)}, str(scorer))
    same = world(tmp_path, {"path": str(model)}, str(scorer))
    assert (same.hash, same.score_key) == (first.hash, first.score_key)

    torch.manual_seed(1)
    save_plain(LlamaForCausalLM, Path(model))  # new weights in the same directory
    retrained = world(tmp_path, {"path": str(model)}, str(scorer))
    assert retrained.hash != first.hash and retrained.score_key == first.score_key

    save_plain(LlamaForCausalLM, Path(scorer))
    rescored = world(tmp_path, {"path": str(model)}, str(scorer))
    assert rescored.hash == retrained.hash and rescored.score_key != first.score_key


def test_a_hub_revision_is_in_the_world_hash(tiny_llama, tmp_path):
    for revision, commit in (("v1", "a" * 40), ("v2", "b" * 40)):
        hub_snapshot(tmp_path / "cache" / "hf", "org/tiny", revision, commit, tiny_llama)
    v1 = world(tmp_path, {"path": "org/tiny", "revision": "v1"}, str(tiny_llama))
    v2 = world(tmp_path, {"path": "org/tiny", "revision": "v2"}, str(tiny_llama))
    assert v1.dir.name == "a" * 40 and v2.dir.name == "b" * 40  # what every loader reads
    assert v1.hash != v2.hash
