"""Evaluation in the hf world, where responses cannot be enumerated: everything is sampled
through a sampler actor and scored by the sweep's scorer.

pi_ref's side is computed once in prepare (`reference_eval`, saved as JSON); each trial then
runs `evaluate_policy` on its checkpoint with one actor (the sweep's shared one, or the
trial's own: didray/sweep/trial.py `trial_sampler`) that serves the policy and, after a
weight reload, pi_ref again. DID-entropy estimates need K samples from each model scored under
both; DID samples are drawn at temperature 1 whatever the sampler's setting, since the
estimators assume draws from the models themselves. The other model scores a sample's token
ids as drawn, not its text (docs/design.md §7.4).
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from didray.config.schema import Sweep
from didray.config.trial import Trial
from didray.eval.estimates import sample_estimates
from didray.eval.scorer_actor import shared_score
from didray.eval.scorers import (
    choice_pairs,
    exact_match,
    multiple_choice_accuracy,
    qa_prompt,
    win_rate,
)
from didray.files import read_json
from didray.sampling.completions import Completion
from didray.sampling.pool import SamplerPool
from didray.worlds import hf_data

EVAL_SEED = 1_000_003  # pi_ref's eval draws stay apart from the data's draws (data.seed)


def reference_eval(pool: SamplerPool, prompts: list[str], sweep: Sweep, scorer,
                   references: dict[str, str]) -> dict:
    """pi_ref's K samples per prompt with their log-probs, its greedy responses and their
    scores (the win-rate baseline), the embedding scorer's references and the QA set."""
    max_tokens, k = sweep.sampler.max_tokens, sweep.eval.did_samples
    samples = pool.generate(prompts, k, temperature=1.0, max_tokens=max_tokens, seed=EVAL_SEED)
    greedy = greedy_texts(pool, prompts, max_tokens)
    qa = sweep.eval.qa
    items = (hf_data.load_qa(qa.source, qa.split, qa.limit, hf_data.Pin(qa.config, qa.revision))
             if qa else [])
    return {"prompts": prompts, "references": references,
            **sample_record(samples), "greedy": greedy, "greedy_scores": scorer(prompts, greedy),
            "qa_mode": qa.mode if qa else None, "qa": [asdict(item) for item in items]}


def greedy_texts(pool: SamplerPool, prompts: list[str], max_tokens: int) -> list[str]:
    return [row[0].text for row in pool.generate(prompts, 1, temperature=0.0,
                                                  max_tokens=max_tokens)]


def sample_record(samples: list[list[Completion]]) -> dict:
    """K samples per prompt as the eval JSON keeps them: the texts (for the scorer and
    deduplication), the token ids drawn (what the other model scores), their log-probs
    under the model that drew them, and whether each ended by eos (else at max_tokens)."""
    return {"samples": [[c.text for c in row] for row in samples],
            "token_ids": [[list(c.token_ids) for c in row] for row in samples],
            "logps": [[c.logprob for c in row] for row in samples],
            "finished": [[c.finished for c in row] for row in samples]}


def cut_fraction(record: dict) -> float:
    """The fraction of a `sample_record`'s samples cut at max_tokens (no eos): their DID is
    between truncated output laws, not whole responses (docs/design.md §7.4)."""
    ended = [f for row in record["finished"] for f in row]
    return 1.0 - sum(ended) / len(ended)


def score_samples(pool: SamplerPool, prompts: list[str], record: dict) -> torch.Tensor:
    """(P, K) log-probs of a `sample_record`'s samples under the pool's current model, scored
    as the ids drawn: a truncated sample without eos, as its own log-prob was summed."""
    ids = record["token_ids"]
    flat = pool.score_ids([p for p, row in zip(prompts, ids, strict=True) for _ in row],
                          [r for row in ids for r in row])
    return torch.tensor(flat, dtype=torch.float64).reshape(len(ids), -1)


def own_logps(record: dict) -> torch.Tensor:
    """(P, K) log-probs of a `sample_record`'s samples under the model that drew them."""
    return torch.tensor(record["logps"], dtype=torch.float64)


def qa_accuracy(pool: SamplerPool, ref: dict, max_tokens: int) -> float | None:
    items = [hf_data.QAItem(**{**item, "answers": tuple(item["answers"]),
                          "choices": item["choices"] and tuple(item["choices"])})
             for item in ref["qa"]]
    if not items:
        return None
    if ref["qa_mode"] == "multiple_choice":
        prompts, completions, _ = choice_pairs(items)
        return multiple_choice_accuracy(items, pool.score(prompts, completions))
    answers = greedy_texts(pool, [qa_prompt(item) for item in items], max_tokens)
    return sum(exact_match(a, item.answers) for a, item in zip(answers, items,
                                                               strict=True)) / len(items)


def evaluate_policy(checkpoint_dir: str, trial: Trial, pool: SamplerPool
                    ) -> tuple[list[dict], dict[str, float]]:
    """DID-entropy estimate rows and the sampled metrics of a trained policy, drawn and scored
    by `pool` (on pi_ref, left on pi_ref) and the sweep's shared scorer actor (the trial
    function loads no sampler or scorer model)."""
    spec = trial.spec
    ref = read_json(spec.eval_file)
    prompts, k, max_tokens = ref["prompts"], len(ref["samples"][0]), spec.sampler.max_tokens
    pool.reload_weights(checkpoint_dir)  # the engine now serves the trained policy
    drawn = sample_record(pool.generate(prompts, k, temperature=1.0, max_tokens=max_tokens,
                                        seed=trial.seed))
    greedy = greedy_texts(pool, prompts, max_tokens)
    ref_under_policy = score_samples(pool, prompts, ref)
    qa = qa_accuracy(pool, ref, max_tokens)
    pool.reload_weights(spec.world_dir)  # back to pi_ref
    policy_under_ref = score_samples(pool, prompts, drawn)
    samples = {"policy": (drawn["samples"], own_logps(drawn), policy_under_ref),
               "ref": (ref["samples"], ref_under_policy, own_logps(ref))}
    rows = sample_estimates(samples, trial.eval.bootstrap, seed=trial.seed)
    greedy_scores = shared_score(spec.sweep, prompts, greedy)
    metrics = {"instruction_score": sum(greedy_scores) / len(greedy_scores),
               "instruction_winrate": win_rate(greedy_scores, ref["greedy_scores"]),
               "did_samples_cut_policy": cut_fraction(drawn),
               "did_samples_cut_ref": cut_fraction(ref)}
    return rows, metrics | ({"qa_accuracy": qa} if qa is not None else {})
