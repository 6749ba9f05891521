"""Exact summaries of a toy policy that only the tests need (by enumeration, nothing sampled
autoregressively)."""

from __future__ import annotations

import torch

from didray.worlds import toy


def greedy_response(model, tokenizer, world: toy.ToyWorld, prompt: str) -> str:
    """The exact mode of the sequence distribution (argmax over the enumerated space).

    This is the most likely response, not token-by-token greedy decoding (which can differ).
    """
    responses = toy.enumerate_responses(world)
    return responses[int(toy.response_logprobs(model, tokenizer, prompt, responses).argmax())]


def sample_responses(model, tokenizer, world: toy.ToyWorld, prompt: str, n: int,
                     seed: int) -> list[str]:
    """n i.i.d. draws from the masked policy, exactly: every log-prob is enumerated and the
    draws come from `torch.multinomial`. Same law as autoregressive sampling under the mask."""
    responses = toy.enumerate_responses(world)
    logp = toy.response_logprobs(model, tokenizer, prompt, responses)
    probs = torch.softmax(logp, dim=0)  # renormalise away float rounding
    generator = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(probs, n, replacement=True, generator=generator)
    return [responses[i] for i in idx.tolist()]


def policy_report(model, tokenizer, world: toy.ToyWorld) -> dict[str, float]:
    """Exact downstream scores: greedy QA accuracy, expected QA and open rewards."""
    responses = toy.enumerate_responses(world)
    acc, qa, opn = [], [], []
    for p in world.prompts:
        probs = toy.response_logprobs(model, tokenizer, p.text, responses).exp()  # (R,)
        rewards = torch.tensor([world.reward(p, r) for r in responses], dtype=probs.dtype)
        if p.family == "fact":
            acc.append(world.reward(p, responses[int(probs.argmax())]))
            qa.append(float(probs @ rewards))
        else:
            opn.append(float(probs @ rewards))
    return {
        "greedy_qa_accuracy": _mean(acc),
        "expected_qa_reward": _mean(qa),
        "expected_open_reward": _mean(opn),
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")
