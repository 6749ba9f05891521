"""What both sampler backends return and how they seed a prompt: a module of its own so that the
backends, which `sampler` imports, need not import `sampler` back."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    """One sampled response: its text, the token ids drawn (the eos included when it
    `finished`; a response cut at max_tokens has none) and their log-probs under the
    distribution it was drawn from (after temperature, top-p and a world's mask).

    The ids, not the text, are what another model scores (`Sampler.score_ids`): decoding,
    stripping and re-encoding can change the tokens, and `encode` appends an eos the sample
    never drew (docs/design.md §7.4)."""

    text: str
    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    finished: bool  # ended in eos; False: truncated at max_tokens

    @property
    def logprob(self) -> float:
        return sum(self.token_logprobs)


def completion(tokenizer, ids: list[int], logprobs: list[float]) -> Completion:
    """A sampled token sequence cut after its first eos (kept: it ends the response), as text
    and ids, with the log-probs of the tokens kept."""
    eos = tokenizer.eos_token_id
    finished = eos in ids
    end = ids.index(eos) + 1 if finished else len(ids)
    text = tokenizer.decode(ids[:end], skip_special_tokens=True).strip()
    return Completion(text, tuple(ids[:end]), tuple(float(x) for x in logprobs[:end]), finished)


def prompt_seed(seed: int, prompt: str) -> int:
    """The random seed of one prompt's draws: stable across processes (unlike `hash`), so a
    prompt gets the same samples whatever batch or actor it lands in."""
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1  # < 2**31: fits every backend's seed
