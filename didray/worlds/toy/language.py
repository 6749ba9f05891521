"""The task language: prompts, rewards and the enumerable response space (docs/design.md §2.2).

Every response is 1..L content words followed by `</s>`, over an alphabet of A content words, so
a prompt's whole response space has sum_{l=1..L} A^l elements.

Task families:
- open ("instruction following"): "<verb> <k> <category>", e.g. "list 2 colours". Reward
  `open_score` = 0.6 * (fraction of words in the category) + 0.2 * [no repeated word]
  + 0.2 * [exactly k words]; in [0, 1].
- fact ("knowledge QA"): "<relation> of <entity>", e.g. "colour of alba", with one right
  content word. Reward `fact_score` = 1 if the response is exactly that word, else 0.

`open_score` is the data reward: the regimes build preference pairs from it. Open prompts are
evaluated by a different function, `judge_accepts` (docs/design.md §6.1): a response is
acceptable when every word is in the requested category and no word repeats, whatever its
length. The judge grades content only and ignores the requested count, so its acceptable set
is larger than open_score's argmax (for k = 2 of a 3-word category: 3 + 6 + 6 = 15 responses
against 6). A policy that concentrates on the data reward's argmax is fully acceptable but
covers few acceptable responses; one that spreads over near-misses covers more.

Prompts are drawn in two sets from one seed: the training prompts (`ToyWorld.prompts`, the
only ones preference pairs are built on), then held-out prompts from the remaining candidates
(`ToyWorld.heldout_prompts`, evaluation only). pi_ref's SFT covers both.
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
    prompts: tuple[ToyPrompt, ...]  # training prompts: the regimes build pairs on these only
    heldout_prompts: tuple[ToyPrompt, ...]  # evaluation only; pi_ref's SFT saw them
    alphabet: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]  # category -> its words inside the alphabet
    _by_text: dict[str, ToyPrompt] = field(repr=False, compare=False)

    @property
    def max_response_tokens(self) -> int:
        return self.spec.max_response_tokens

    @property
    def all_prompts(self) -> tuple[ToyPrompt, ...]:
        """Training prompts, then held-out ones: the rows of every enumerated table."""
        return self.prompts + self.heldout_prompts

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

    def teachable(self, prompt: ToyPrompt) -> bool:
        """A fact whose answer the preference data can teach: some training fact prompt of the
        same relation has the same answer word (docs/design.md §2.2). Every fact's answer is
        drawn on its own, so no pair holds a held-out fact itself; what pairs on "colour of
        nodo" (answer green) can carry to "colour of fari" is the word green for the relation
        colour, which is right there only if fari's answer is green too. (A relation and its
        answer category are one to one in FACT_RELATIONS, so the category names the relation.)"""
        return prompt.family == "fact" and any(
            t.category == prompt.category and t.answer == prompt.answer
            for t in self.fact_prompts)

    def judge(self, prompt: ToyPrompt, response: str) -> float:
        """The evaluation's verdict on `response`: 1.0 acceptable, else 0.0. Open prompts:
        `judge_accepts`; fact prompts: exact match, as in training."""
        if prompt.family == "fact":
            return fact_score(prompt, response)
        return float(judge_accepts(prompt, response, self.categories))


def judge_accepts(prompt: ToyPrompt, response: str,
                  categories: dict[str, tuple[str, ...]]) -> bool:
    """Every word in the requested category and no word repeated; the count is not checked."""
    words = response.split()
    return all(w in categories[prompt.category] for w in words) and len(set(words)) == len(words)


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
    """Deterministically draw the prompts (and fact answers) of `spec` from `spec.seed`.

    The held-out prompts are drawn after every training draw, from the candidates left, so a
    seed's training prompts do not depend on the held-out counts.
    """
    alphabet = CONTENT_POOL[: spec.response_alphabet]
    # Only categories with >= 2 alphabet words make prompts: a 1-word category is degenerate.
    categories = {
        c: tuple(w for w in ws if w in alphabet)
        for c, ws in CATEGORIES.items()
        if sum(w in alphabet for w in ws) >= 2
    }
    rng = random.Random(spec.seed)
    opens = _open_candidates(spec, categories)
    relations = [r for r, c in FACT_RELATIONS.items() if c in categories]
    facts = [(r, e) for r in relations for e in ENTITIES]
    open_train = _draw(opens, spec.n_open_prompts, [], "n_open_prompts", rng)
    fact_train = _draw(facts, spec.n_fact_prompts, [], "n_fact_prompts", rng)
    prompts = _open_prompts(open_train) + _fact_prompts(spec, fact_train, categories, rng)
    open_held = _draw(opens, spec.n_heldout_open_prompts, open_train,
                      "n_open_prompts + n_heldout_open_prompts", rng)
    fact_held = _draw(facts, spec.n_heldout_fact_prompts, fact_train,
                      "n_fact_prompts + n_heldout_fact_prompts", rng)
    heldout = _open_prompts(open_held) + _fact_prompts(spec, fact_held, categories, rng)
    by_text = {p.text: p for p in prompts + heldout}
    return ToyWorld(spec, prompts, heldout, alphabet, categories, by_text)


def _draw(candidates: list, n: int, taken: list, what: str, rng: random.Random) -> list:
    left = [c for c in candidates if c not in taken]
    if n > len(left):
        raise ValueError(f"{what} > {len(candidates)} candidates")
    return rng.sample(left, n)


def _open_candidates(
    spec: ToyWorldSpec, categories: dict[str, tuple[str, ...]]
) -> list[tuple[str, int, str]]:
    return [
        (verb, k, cat)
        for verb in OPEN_VERBS
        for k in range(1, spec.max_response_tokens + 1)
        for cat in categories
    ]


def _open_prompts(chosen: list[tuple[str, int, str]]) -> tuple[ToyPrompt, ...]:
    return tuple(
        ToyPrompt(f"{verb} {COUNT_WORDS[k - 1]} {cat}", "open", cat, target_len=k)
        for verb, k, cat in chosen
    )


def _fact_prompts(
    spec: ToyWorldSpec, chosen: list[tuple[str, str]], categories: dict[str, tuple[str, ...]],
    rng: random.Random,
) -> tuple[ToyPrompt, ...]:
    # Exactly round(rate * n) known facts, so pi_ref's accuracy is deterministic by design.
    n_known = round(spec.fact_known_rate * len(chosen))
    known = set(rng.sample(range(len(chosen)), n_known))
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

