"""Exact evaluation in the toy world: every response of every prompt is enumerated.

Inputs are tables over (prompt, response): log-probs of the policy and of pi_ref and the
world's scores, each (P, R) with responses in `enumerate_responses` order. Nothing is sampled,
so every number here is the population value the estimators of later stages are graded against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from didray.core.did import did_entropy
from didray.worlds import toy


def win_rate(p: Tensor, q: Tensor, scores: Tensor) -> Tensor:
    """P(score(y) > score(y')) + P(tie) / 2 with y ~ p, y' ~ q, for one prompt: (R,) -> ().

    One prompt at a time: the (R, R) comparison table of every prompt at once would take
    hundreds of MB for the default world.
    """
    greater = (scores.unsqueeze(-1) > scores.unsqueeze(-2)).to(p.dtype)  # (R, R)
    ties = (scores.unsqueeze(-1) == scores.unsqueeze(-2)).to(p.dtype)  # (R, R)
    return p @ (greater + 0.5 * ties) @ q  # ()


def _mean(values: Tensor, mask: Tensor) -> float:
    return float(values[mask].mean()) if bool(mask.any()) else float("nan")


def evaluate_tables(
    logp: Tensor, logp_ref: Tensor, scores: Tensor, is_fact: Tensor
) -> dict[str, float]:
    """Downstream scores and DID entropy of a policy from enumerated tables.

    logp, logp_ref, scores: (P, R); is_fact: (P,) bool (fact prompts = knowledge QA).
    instruction_score: expected score on open prompts; instruction_winrate: against pi_ref;
    qa_accuracy: the policy's most likely response is the answer (greedy exact match).
    """
    p, q = logp.exp(), logp_ref.exp()  # (P, R)
    is_open = ~is_fact  # (P,)
    entropy = did_entropy(logp, logp_ref)  # (P,)
    expected = (p * scores).sum(-1)  # (P,)
    greedy = scores.gather(-1, logp.argmax(-1, keepdim=True)).squeeze(-1)  # (P,)
    wins = torch.stack([win_rate(*row) for row in zip(p, q, scores, strict=True)])  # (P,)
    return {
        "did_entropy": float(entropy.mean()),
        "did_entropy_open": _mean(entropy, is_open),
        "did_entropy_fact": _mean(entropy, is_fact),
        "instruction_score": _mean(expected, is_open),
        "instruction_winrate": _mean(wins, is_open),
        "qa_accuracy": _mean(greedy, is_fact),
        "qa_expected": _mean(expected, is_fact),
    }


def score_table(world: toy.ToyWorld) -> tuple[Tensor, Tensor]:
    """The world's score of every (prompt, response): (P, R), and which prompts are facts (P,)."""
    responses = toy.enumerate_responses(world)
    scores = torch.tensor([[world.reward(p, r) for r in responses] for p in world.prompts],
                          dtype=torch.float64)  # (P, R)
    return scores, torch.tensor([p.family == "fact" for p in world.prompts])


@dataclass(frozen=True)
class ToyTables:
    """What exact evaluation needs besides the policy, loaded once per Train run."""

    world: toy.ToyWorld
    ref: Tensor  # (P, R) pi_ref's log-probs, enumerated once in prepare
    scores: Tensor  # (P, R)
    is_fact: Tensor  # (P,)

    @classmethod
    def load(cls, world_dir: Path, enum_file: Path) -> ToyTables:
        world = toy.read_world(world_dir)
        return cls(world, torch.load(enum_file), *score_table(world))

    def policy_table(self, model, tokenizer) -> Tensor:
        """The policy's log-prob of every (prompt, response): (P, R)."""
        was_training = model.training
        table = toy.enumerate_logps(model.eval(), tokenizer, self.world)
        model.train(was_training)
        return table

    def evaluate(self, table: Tensor) -> dict[str, float]:
        return evaluate_tables(table, self.ref, self.scores, self.is_fact)
