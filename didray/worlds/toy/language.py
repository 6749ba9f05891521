"""The task language: prompts, rewards and the enumerable response space (docs/design.md §2.2).

Every response is 1..L content words followed by `</s>`, over an alphabet of A content words, so
a prompt's whole response space has sum_{l=1..L} A^l elements.

Task families:
- open ("instruction following"): "<verb> <k> <category>", e.g. "list 2 colours". Reward
  `open_score` = 0.6 * (fraction of words in the category) + 0.2 * [no repeated word]
  + 0.2 * [exactly k words]; in [0, 1].
- fact ("knowledge QA"): "<relation> of <entity>", e.g. "colour of alba", with one right
  content word. Reward `fact_score` = 1 if the response is exactly that word, else 0.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Literal

from didray.config.schema import ToyWorldSpec

# ToyWorldSpec (didray.config.schema) bounds its fields by these tables' sizes; a test checks.
# Content words by category. The alphabet is the first A words of CONTENT_POOL, which lists
# three words per category first so that the default A=9 is balanced.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "colours": ("red", "blue", "green", "yellow"),
    "animals": ("cat", "dog", "fox", "owl"),
    "numbers": ("one", "two", "three", "four"),
}
CONTENT_POOL: tuple[str, ...] = (
    "red", "blue", "green", "cat", "dog", "fox", "one", "two", "three", "yellow", "owl", "four",
)  # fmt: skip
OPEN_VERBS = ("list", "name", "give")
COUNT_WORDS = ("1", "2", "3", "4", "5")  # prompt-only, so they never collide with content words
FACT_RELATIONS: dict[str, str] = {"colour": "colours", "pet": "animals", "count": "numbers"}
ENTITIES = (
    "alba", "boro", "cedo", "dari", "eno", "fari", "gilo", "hamo",
    "ivo", "juno", "kilo", "lumo", "mira", "nodo", "ori", "pavo",
)  # fmt: skip


@dataclass(frozen=True)
class ToyPrompt:
    """One prompt. `category` is the requested (open) or answer (fact) category."""

    text: str
    family: Literal["open", "fact"]
    category: str
    target_len: int | None = None  # open prompts: the requested number of words
    answer: str | None = None  # fact prompts: the one right word
    teacher_knows: bool | None = None  # fact prompts: whether the SFT teacher knows the answer
    teacher_belief: str | None = None  # fact prompts the teacher does not know: its wrong answer


@dataclass(frozen=True)
class ToyWorld:
    """Prompts, response alphabet and rewards of one spec (see `build_world`)."""

    spec: ToyWorldSpec
    prompts: tuple[ToyPrompt, ...]
    alphabet: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]  # category -> its words inside the alphabet
    _by_text: dict[str, ToyPrompt] = field(repr=False, compare=False)

    @property
    def max_response_tokens(self) -> int:
        return self.spec.max_response_tokens

    @property
    def open_prompts(self) -> tuple[ToyPrompt, ...]:
        return tuple(p for p in self.prompts if p.family == "open")

    @property
    def fact_prompts(self) -> tuple[ToyPrompt, ...]:
        return tuple(p for p in self.prompts if p.family == "fact")

    def prompt(self, text: str) -> ToyPrompt:
        return self._by_text[text]

    def reward(self, prompt: str | ToyPrompt, response: str) -> float:
        """The family's programmatic score of `response` (words, without `</s>`)."""
        p = self.prompt(prompt) if isinstance(prompt, str) else prompt
        if p.family == "fact":
            return fact_score(p, response)
        return open_score(p, response, self.categories)


def open_score(prompt: ToyPrompt, response: str, categories: dict[str, tuple[str, ...]]) -> float:
    """0.6 * on-category fraction + 0.2 * [no repeats] + 0.2 * [exactly target_len words]."""
    words = response.split()
    if not words:
        return 0.0
    on_topic = sum(w in categories[prompt.category] for w in words) / len(words)
    distinct = float(len(set(words)) == len(words))
    right_len = float(len(words) == prompt.target_len)
    return 0.6 * on_topic + 0.2 * distinct + 0.2 * right_len


def fact_score(prompt: ToyPrompt, response: str) -> float:
    """Exact match: 1 if the response is exactly the answer word, else 0."""
    return float(response.split() == [prompt.answer])


def build_world(spec: ToyWorldSpec) -> ToyWorld:
    """Deterministically draw the prompts (and fact answers) of `spec` from `spec.seed`."""
    alphabet = CONTENT_POOL[: spec.response_alphabet]
    # Only categories with >= 2 alphabet words make prompts: a 1-word category is degenerate.
    categories = {
        c: tuple(w for w in ws if w in alphabet)
        for c, ws in CATEGORIES.items()
        if sum(w in alphabet for w in ws) >= 2
    }
    rng = random.Random(spec.seed)
    prompts = _open_prompts(spec, categories, rng) + _fact_prompts(spec, categories, rng)
    return ToyWorld(spec, prompts, alphabet, categories, {p.text: p for p in prompts})


def _open_prompts(
    spec: ToyWorldSpec, categories: dict[str, tuple[str, ...]], rng: random.Random
) -> tuple[ToyPrompt, ...]:
    candidates = [
        (verb, k, cat)
        for verb in OPEN_VERBS
        for k in range(1, spec.max_response_tokens + 1)
        for cat in categories
    ]
    if spec.n_open_prompts > len(candidates):
        raise ValueError(f"n_open_prompts > {len(candidates)} candidates")
    chosen = rng.sample(candidates, spec.n_open_prompts)
    return tuple(
        ToyPrompt(f"{verb} {COUNT_WORDS[k - 1]} {cat}", "open", cat, target_len=k)
        for verb, k, cat in chosen
    )


def _fact_prompts(
    spec: ToyWorldSpec, categories: dict[str, tuple[str, ...]], rng: random.Random
) -> tuple[ToyPrompt, ...]:
    relations = [r for r, c in FACT_RELATIONS.items() if c in categories]
    candidates = [(r, e) for r in relations for e in ENTITIES]
    if spec.n_fact_prompts > len(candidates):
        raise ValueError(f"n_fact_prompts > {len(candidates)} candidates")
    chosen = rng.sample(candidates, spec.n_fact_prompts)
    # Exactly round(rate * n) known facts, so pi_ref's accuracy is deterministic by design.
    n_known = round(spec.fact_known_rate * spec.n_fact_prompts)
    known = set(rng.sample(range(spec.n_fact_prompts), n_known))
    prompts = []
    for i, (rel, ent) in enumerate(chosen):
        words = categories[FACT_RELATIONS[rel]]
        answer = rng.choice(words)
        belief = None if i in known else rng.choice([w for w in words if w != answer])
        prompts.append(
            ToyPrompt(
                f"{rel} of {ent}",
                "fact",
                FACT_RELATIONS[rel],
                answer=answer,
                teacher_knows=i in known,
                teacher_belief=belief,
            )
        )
    return tuple(prompts)


def enumerate_responses(world: ToyWorld) -> list[str]:
    """Every response (words, without `</s>`): by length, then in alphabet order.

    The space is the same for every prompt.
    """
    return [
        " ".join(words)
        for n in range(1, world.max_response_tokens + 1)
        for words in itertools.product(world.alphabet, repeat=n)
    ]


def response_space_size(world: ToyWorld) -> int:
    a, big_l = len(world.alphabet), world.max_response_tokens
    return sum(a**n for n in range(1, big_l + 1))

