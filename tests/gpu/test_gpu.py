"""GPU-only paths: vLLM on CUDA, bf16 sampling, bf16 DPO with gradient checkpointing and a
bf16 reward model on the GPU. CI has no GPU: these run on GPU machines (`pytest -m gpu`) and
are skipped elsewhere, each saying why."""

import math

import pytest
import torch
from support.builders import RM_TEMPLATE, save_plain, save_toy_policy
from transformers import LlamaForSequenceClassification

from didray.core.dpo import PreferenceLoss
from didray.data.tensors import PairTensors
from didray.eval.scorers import RewardModelScorer
from didray.sampling.sampler import Sampler
from didray.train.loop import Batches, make_optimizer, train_dpo
from didray.worlds import toy
from didray.worlds.policy import load_policy
from didray.worlds.text import batched_response_logps, encode

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (vLLM on CUDA, bf16); CPU machines test the same code in fp32")]

SPEC = toy.ToyWorldSpec(n_open_prompts=2, n_fact_prompts=2, response_alphabet=6,
                        max_response_tokens=2)
WORLD = toy.build_world(SPEC)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return save_toy_policy(tmp_path_factory.mktemp("policy"), SPEC)


def pairs() -> tuple[list[str], list[str]]:
    responses = toy.enumerate_responses(WORLD)[:6]
    return [WORLD.prompts[0].text] * len(responses), responses


def test_vllm_on_cuda_scores_like_transformers_in_bf16(policy_dir):
    pytest.importorskip("vllm", reason="vLLM not installed (pip install -e '.[vllm]')")
    prompts, responses = pairs()
    model, tokenizer, hook = load_policy(policy_dir, "bfloat16")
    enc = encode(tokenizer, prompts, responses)
    expected = batched_response_logps(model.cuda().eval(), enc.to("cuda"), hook).cpu()
    engine = Sampler(policy_dir, backend="vllm", dtype="bfloat16")
    assert engine.score(prompts, responses) == pytest.approx(expected.tolist(), abs=0.05)
    drawn = engine.generate(prompts[:1], n=16, max_tokens=4, seed=0)[0]
    assert {c.text for c in drawn} <= set(toy.enumerate_responses(WORLD))  # masked on GPU


def test_bf16_dpo_with_gradient_checkpointing_on_cuda(policy_dir):
    prompts, responses = pairs()
    model, tokenizer, hook = load_policy(policy_dir, "bfloat16", gradient_checkpointing=True)
    model = model.cuda()
    enc = encode(tokenizer, prompts[:3] * 2, responses[:3] + responses[3:6]).to("cuda")
    data = PairTensors(enc, batched_response_logps(model.eval(), enc, hook))
    losses = []
    train_dpo(model, make_optimizer(model.parameters(), "adamw", 1e-3, 0.0), data,
              PreferenceLoss(0.1), Batches(size=3, seed=0), range(3), hook=hook,
              on_step=lambda step, m: losses.append(m["loss"]))
    assert losses[0] == pytest.approx(math.log(2), abs=1e-2)  # bf16 rounding at pi_ref
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_bf16_reward_model_scores_on_the_gpu_as_fp32_on_the_cpu(tmp_path):
    tokenizer = toy.build_tokenizer()
    tokenizer.chat_template = RM_TEMPLATE
    torch.manual_seed(0)
    rm = save_plain(LlamaForSequenceClassification, tmp_path / "rm", tokenizer, num_labels=1)
    prompts, responses = pairs()
    on_gpu = RewardModelScorer(str(rm), "bfloat16")
    assert next(on_gpu.model.parameters()).device.type == "cuda"
    cpu = RewardModelScorer(str(rm), "float32")
    cpu.model.to("cpu")  # batches follow the model's device
    assert on_gpu(prompts, responses) == pytest.approx(cpu(prompts, responses), abs=0.05)
