"""Exact evaluation in the toy world: every response of every prompt is enumerated.

Inputs are tables over (prompt, response): log-probs of the policy and of pi_ref, the data
reward and the judge's verdicts, each (P, R) with rows in `ToyWorld.all_prompts` order
(training prompts, then held-out ones) and responses in `enumerate_responses` order. Nothing
is sampled, so every number here is the population value the estimators of later stages are
graded against.

Why each score stands in for the paper's benchmarks (docs/design.md §6.1):

- The scores are taken on held-out prompts, which no preference pair contains: what DPO
  learned must transfer, as it must to a benchmark's prompts.
- Instruction following is judged by `ToyWorld.judge`, not by the data reward `open_score`
  that built the pairs: like a benchmark's judge, it did not build the data. Open-ended
  instructions have many acceptable answers, so the score also counts coverage, the expected
  number of distinct acceptable answers among k samples. `instruction_score` =
  (1 - w) E[judge] + w coverage_k, with w = `eval.judge.diversity_weight`: w = 0 asks only for
  acceptable answers, w = 1 only for covering them. The toy world cannot say which is right;
  w decides what "instruction following" rewards, and the sweep can then find either sign.
- Knowledge QA is exact-match accuracy of the most likely answer, split into facts the SFT
  teacher knew (pi_ref already leans to the answer: sharpening helps) and facts it did not
  (pi_ref leans to a wrong belief: sharpening hurts), as benchmark questions split into what
  the base model knows and what it does not; and, across that, into facts the preference data
  can teach (a training fact of the same relation has the same answer word) and facts they
  cannot, where only pi_ref's own knowledge can answer.

DID entropy stays over the training prompts, where the preference data moved the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerFast

from didray.config.schema import Judge
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


def coverage(p: Tensor, accepted: Tensor, k: int) -> Tensor:
    """Expected distinct acceptable responses among k draws from p, over min(k, #acceptable):
    (..., R) -> (...), in [0, 1]. A response is drawn at least once with 1 - (1 - p)^k."""
    drawn = -torch.expm1(k * torch.log1p(-p))  # (..., R) 1 - (1 - p)^k, exact near p = 0
    return (accepted * drawn).sum(-1) / accepted.sum(-1).clamp(max=k)


@dataclass(frozen=True)
class PromptTables:
    """The world's side of exact evaluation, rows in `ToyWorld.all_prompts` order."""

    scores: Tensor  # (P, R) the data reward (open_score / fact_score)
    accepted: Tensor  # (P, R) the judge's verdict, 1.0 or 0.0 (fact prompts: the answer)
    is_fact: Tensor  # (P,) bool
    heldout: Tensor  # (P,) bool: never in a preference pair
    known: Tensor  # (P,) bool: fact prompts whose answer the SFT teacher knows
    teachable: Tensor  # (P,) bool: fact prompts whose answer the pairs can teach (§2.2)


def prompt_tables(world: toy.ToyWorld) -> PromptTables:
    responses = toy.enumerate_responses(world)
    prompts = world.all_prompts

    def table(score) -> Tensor:
        return torch.tensor([[score(p, r) for r in responses] for p in prompts],
                            dtype=torch.float64)

    return PromptTables(table(world.reward), table(world.judge),
                        torch.tensor([p.family == "fact" for p in prompts]),
                        torch.tensor([i >= len(world.prompts) for i in range(len(prompts))]),
                        torch.tensor([bool(p.teacher_knows) for p in prompts]),
                        torch.tensor([world.teachable(p) for p in prompts]))


def _mean(values: Tensor, mask: Tensor) -> float:
    return float(values[mask].mean()) if bool(mask.any()) else float("nan")


def evaluate_tables(logp: Tensor, logp_ref: Tensor, tables: PromptTables,
                    judge: Judge) -> dict[str, float]:
    """Downstream scores and DID entropy of a policy from enumerated tables (logp, logp_ref:
    (P, R)). The columns are defined in docs/design.md §6.1."""
    p, q = logp.exp(), logp_ref.exp()  # (P, R)
    train, fact = ~tables.heldout, tables.is_fact
    held_open, held_fact = tables.heldout & ~fact, tables.heldout & fact
    entropy = did_entropy(logp, logp_ref)  # (P,)
    acceptable = (p * tables.accepted).sum(-1)  # (P,) E[judge]; fact prompts: p(answer)
    covered = coverage(p, tables.accepted, judge.k)  # (P,)
    w = judge.diversity_weight
    instruction = (1 - w) * acceptable + w * covered  # (P,)
    correct = tables.accepted.gather(-1, logp.argmax(-1, keepdim=True)).squeeze(-1)  # (P,)
    rows = held_open.nonzero().flatten().tolist()  # the (R, R) win table only where it is used
    wins = torch.full_like(acceptable, float("nan"))
    for i in rows:
        wins[i] = win_rate(p[i], q[i], tables.accepted[i])
    return {
        "did_entropy": _mean(entropy, train),
        "did_entropy_open": _mean(entropy, train & ~fact),
        "did_entropy_fact": _mean(entropy, train & fact),
        "instruction_score": _mean(instruction, held_open),
        "instruction_judge": _mean(acceptable, held_open),
        "instruction_coverage": _mean(covered, held_open),
        "instruction_winrate": _mean(wins, held_open),
        "instruction_score_seen": _mean(instruction, train & ~fact),
        "qa_accuracy": _mean(correct, held_fact),
        "qa_accuracy_known": _mean(correct, held_fact & tables.known),
        "qa_accuracy_unknown": _mean(correct, held_fact & ~tables.known),
        "qa_accuracy_teachable": _mean(correct, held_fact & tables.teachable),
        "qa_accuracy_unteachable": _mean(correct, held_fact & ~tables.teachable),
        "qa_expected": _mean(acceptable, held_fact),
        "qa_accuracy_seen": _mean(correct, train & fact),
    }


@dataclass(frozen=True)
class ToyTables:
    """What exact evaluation needs besides the policy, loaded once per Train run."""

    world: toy.ToyWorld
    ref: Tensor  # (P, R) pi_ref's log-probs, enumerated once in prepare
    prompts: PromptTables
    judge: Judge
    enumeration: toy.Enumeration  # the prompts tokenised once, not at every evaluation

    @classmethod
    def load(cls, world_dir: Path, enum_file: Path, judge: Judge) -> ToyTables:
        world = toy.read_world(world_dir)
        enumeration = toy.Enumeration.of(world, PreTrainedTokenizerFast.from_pretrained(world_dir))
        return cls(world, torch.load(enum_file), prompt_tables(world), judge, enumeration)

    def policy_table(self, model, tokenizer) -> Tensor:
        """The policy's log-prob of every (prompt, response): (P, R)."""
        was_training = model.training
        table = self.enumeration.logps(model.eval(), tokenizer)
        model.train(was_training)
        return table

    def training_rows(self, table: Tensor) -> Tensor:
        """The rows of the training prompts, which come first: (P_train, R)."""
        return table[: len(self.world.prompts)]

    def evaluate(self, table: Tensor) -> dict[str, float]:
        """A policy's table (P, R), in float32 as trained or float64 as a computed optimum."""
        return evaluate_tables(table, self.ref.to(table.dtype), self.prompts, self.judge)
