"""The toy language world: a tiny Llama fitted to a synthetic task language (docs/design.md §2.2).

Every response is 1..L content words followed by `</s>`, over an alphabet of A content words, so
a prompt's whole response space has sum_{l=1..L} A^l elements and sequence probabilities, DIDs
and DID entropies can be computed exactly by enumeration.

The policy of this world is the *masked* model: at response step 0 only content words are
allowed, at steps 1..L-1 content words and `</s>`, at step L only `</s>`.
`ResponseSpace.mask_logits` is the one function that applies this mask; scoring
(`response_logprobs`), sampling and the `generate` logits processor all go through it, and a
trainer computing DPO log-probs must too (via `masked_response_logits`), otherwise enumerated
probabilities would not sum to 1.

Task families:
- open ("instruction following"): "<verb> <k> <category>", e.g. "list 2 colours". Reward
  `open_score` = 0.6 * (fraction of words in the category) + 0.2 * [no repeated word]
  + 0.2 * [exactly k words]; in [0, 1].
- fact ("knowledge QA"): "<relation> of <entity>", e.g. "colour of alba", with one right
  content word. Reward `fact_score` = 1 if the response is exactly that word, else 0.

pi_ref is the model after a brief SFT on samples from a "teacher" that knows only some facts
(`ToyWorldSpec.fact_known_rate`) and answers open prompts with a mix of good and mediocre
responses, so pi_ref's QA accuracy and open reward are both far from their maxima.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessor,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from didray.files import build_once
from didray.worlds.text import (
    LogitsHook,
    batched_response_logps,
    encode,
    response_logps,
)

# Bump when the world/teacher/SFT recipe changes, so cached references are not reused wrongly.
RECIPE_VERSION = "toy-v1"

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
USER, ASSISTANT = "user:", "assistant:"

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

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "<s> user: {{ message['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} assistant:{% endif %}"
)

# Teacher mixture weights (documented recipe; part of RECIPE_VERSION).
FACT_KNOWN = {"answer": 0.6, "same_category": 0.3, "random": 0.1}
FACT_UNKNOWN = {"belief": 0.5, "answer": 0.15, "same_category": 0.25, "random": 0.1}
OPEN_MIX = {"good": 0.5, "mediocre": 0.35, "random": 0.15}


@dataclass(frozen=True)
class ToyWorldSpec:
    """The recipe of a toy world and its reference policy; its hash names the cache entry."""

    seed: int = 0
    n_open_prompts: int = 12  # drawn from |OPEN_VERBS| * L * |categories| candidates
    n_fact_prompts: int = 12  # drawn from |FACT_RELATIONS| * |ENTITIES| candidates
    response_alphabet: int = 9  # A content words, 6..12
    max_response_tokens: int = 3  # L, content words per response (before </s>)
    fact_known_rate: float = 0.6  # fraction of fact prompts the SFT teacher answers correctly
    hidden_size: int = 64
    n_layers: int = 2
    n_heads: int = 2
    head_dim: int = 32  # >= 32: vLLM's CPU attention rejects smaller heads
    intermediate_size: int = 128
    sft_steps: int = 600
    sft_lr: float = 3e-3
    sft_batch_size: int = 64
    sft_samples_per_prompt: int = 64

    def __post_init__(self) -> None:
        if not 6 <= self.response_alphabet <= len(CONTENT_POOL):
            raise ValueError(f"response_alphabet must be in 6..{len(CONTENT_POOL)}")
        if not 1 <= self.max_response_tokens <= len(COUNT_WORDS):
            raise ValueError(f"max_response_tokens must be in 1..{len(COUNT_WORDS)}")
        if self.head_dim < 32:
            raise ValueError("head_dim must be >= 32 (vLLM CPU attention)")
        if not 0.0 <= self.fact_known_rate <= 1.0:
            raise ValueError("fact_known_rate must be in [0, 1]")
        if self.n_open_prompts < 0 or self.n_fact_prompts < 0:
            raise ValueError("prompt counts must be >= 0")

    def recipe_hash(self) -> str:
        """sha256 (first 16 hex) of the recipe version and every spec field."""
        blob = json.dumps({"recipe": RECIPE_VERSION, "spec": asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


# ----------------------------------------------------------------------------- world building


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


def enumerate_responses(world: ToyWorld, prompt: str | ToyPrompt | None = None) -> list[str]:
    """Every response (words, without `</s>`): by length, then in alphabet order.

    The space is the same for every prompt; `prompt` is accepted for call-site clarity.
    """
    del prompt
    return [
        " ".join(words)
        for n in range(1, world.max_response_tokens + 1)
        for words in itertools.product(world.alphabet, repeat=n)
    ]


def response_space_size(world: ToyWorld) -> int:
    a, big_l = len(world.alphabet), world.max_response_tokens
    return sum(a**n for n in range(1, big_l + 1))


# ----------------------------------------------------------------------------- tokenizer, model


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over every word the task language can use (any spec)."""
    words = [PAD, BOS, EOS, UNK, USER, ASSISTANT, "of", *OPEN_VERBS, *COUNT_WORDS]
    words += [*CATEGORIES, *FACT_RELATIONS, *ENTITIES, *CONTENT_POOL]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="right",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(spec: ToyWorldSpec, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama (float32), seeded by `spec.seed`.

    The response space is stored in the config (`toy_response_words`, `toy_max_response_tokens`)
    so any saved policy carries the mask that defines it.
    """
    world_alphabet = list(CONTENT_POOL[: spec.response_alphabet])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        toy_response_words=world_alphabet,
        toy_max_response_tokens=spec.max_response_tokens,
    )
    # fork_rng: seed the init without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()


# ----------------------------------------------------------------------------- response mask


@dataclass(frozen=True)
class ResponseSpace:
    """Which token may appear at each response step; defines the toy world's policy."""

    content_ids: tuple[int, ...]
    eos_id: int
    vocab_size: int
    max_tokens: int  # L

    @classmethod
    def from_model(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
    ) -> ResponseSpace:
        words = model.config.toy_response_words
        ids = tuple(tokenizer.convert_tokens_to_ids(w) for w in words)
        big_l = model.config.toy_max_response_tokens
        return cls(ids, tokenizer.eos_token_id, model.config.vocab_size, big_l)

    def allowed(self, device: torch.device | str = "cpu") -> Tensor:
        """(L+1, V) bool: row s lists the tokens allowed at response step s."""
        table = torch.zeros(self.max_tokens + 1, self.vocab_size, dtype=torch.bool, device=device)
        table[: self.max_tokens, list(self.content_ids)] = True  # content at steps 0..L-1
        table[1:, self.eos_id] = True  # </s> at steps 1..L (never an empty response)
        return table

    def mask_logits(self, logits: Tensor, steps: Tensor) -> Tensor:
        """Disallowed tokens get the dtype's minimum where steps >= 0; other rows unchanged.

        logits (..., V); steps (...) long, the response step each row predicts, -1 for rows
        outside the response (prompt, last token, padding). A finite minimum rather than -inf
        keeps 0 * logp = 0 at masked-out positions of a loss.
        """
        table = self.allowed(logits.device)  # (L+1, V)
        in_resp = steps >= 0  # (...)
        allowed = table[steps.clamp(0, self.max_tokens)] | ~in_resp.unsqueeze(-1)  # (..., V)
        return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)


def response_steps(loss_mask: Tensor) -> Tensor:
    """(B, T) loss_mask over label positions -> (B, T) step each *logit* position predicts.

    logits[:, i] predicts labels[:, i+1], so the step at logit position i is the index of
    response token i+1 within its response, or -1 if position i+1 is not a response token.
    """
    mask = loss_mask.long()  # (B, T)
    shifted = torch.zeros_like(mask)  # (B, T)
    shifted[:, :-1] = mask[:, 1:]
    steps = shifted.cumsum(dim=1) - 1  # (B, T)
    return torch.where(shifted.bool(), steps, torch.full_like(steps, -1))


def masked_response_logits(logits: Tensor, loss_mask: Tensor, space: ResponseSpace) -> Tensor:
    """Apply the response mask to a training batch: logits (B, T, V), loss_mask (B, T).

    Use this before any log-prob computation on toy-world policies (SFT, DPO, reference).
    """
    return space.mask_logits(logits, response_steps(loss_mask))


class ResponseLogitsProcessor(LogitsProcessor):
    """`generate` logits processor applying the same mask; all rows share one prompt length."""

    def __init__(self, space: ResponseSpace, prompt_len: int) -> None:
        self.space = space
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        step = input_ids.shape[1] - self.prompt_len
        steps = torch.full(scores.shape[:-1], step, dtype=torch.long, device=scores.device)
        return self.space.mask_logits(scores, steps)


# ----------------------------------------------------------------------------- scoring


def response_space(model: PreTrainedModel,
                   tokenizer: PreTrainedTokenizerBase) -> ResponseSpace | None:
    """The toy response space a saved policy carries in its config; None for other models."""
    if getattr(model.config, "toy_response_words", None) is None:
        return None
    return ResponseSpace.from_model(model, tokenizer)


def response_hook(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  temperature: float = 1.0) -> LogitsHook:
    """The masked policy as a `didray.worlds.text` logits hook (temperature before the mask)."""
    space = ResponseSpace.from_model(model, tokenizer)
    return lambda logits, mask: masked_response_logits(logits / temperature, mask, space)


@torch.no_grad()
def response_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    responses: Sequence[str],
    batch_size: int = 256,
    temperature: float = 1.0,
) -> Tensor:
    """(R,) log pi(response | prompt) of the masked policy, `</s>` included.

    `temperature` scales the token logits before the mask and softmax, i.e. the exact
    distribution of autoregressive sampling at that temperature.
    """
    enc = encode(tokenizer, [prompt] * len(responses), responses)
    hook = response_hook(model, tokenizer, temperature)
    return batched_response_logps(model, enc, hook, batch_size)


def enumerate_logps(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: ToyWorld
) -> Tensor:
    """log pi(y | x) of every enumerated response of every prompt: (P, R)."""
    responses = enumerate_responses(world)
    return torch.stack([response_logprobs(model, tokenizer, p.text, responses)
                        for p in world.prompts])


def policy_responses(model: PreTrainedModel) -> list[str]:
    """The response space of a saved toy policy, read from its config (same order as
    `enumerate_responses`)."""
    words, big_l = model.config.toy_response_words, model.config.toy_max_response_tokens
    return [" ".join(ws) for n in range(1, big_l + 1) for ws in itertools.product(words, repeat=n)]


def greedy_response(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """The exact mode of the sequence distribution (argmax over the enumerated space).

    This is the most likely response, not token-by-token greedy decoding (which can differ).
    """
    responses = policy_responses(model)
    return responses[int(response_logprobs(model, tokenizer, prompt, responses).argmax())]


def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    n: int,
    generator: torch.Generator | int | None = None,
    temperature: float = 1.0,
) -> list[str]:
    """n i.i.d. draws from the masked policy, exactly: the space is small enough to enumerate
    every log-prob and draw with `torch.multinomial`. Same law as autoregressive sampling at
    `temperature` under the mask."""
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    responses = policy_responses(model)
    logp = response_logprobs(model, tokenizer, prompt, responses, temperature=temperature)
    probs = torch.softmax(logp, dim=0)  # renormalise away float rounding
    idx = torch.multinomial(probs, n, replacement=True, generator=generator)
    return [responses[i] for i in idx.tolist()]


def policy_report(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: ToyWorld
) -> dict[str, float]:
    """Exact downstream scores: greedy QA accuracy, expected QA and open rewards."""
    responses = enumerate_responses(world)
    acc, qa, opn = [], [], []
    for p in world.prompts:
        probs = response_logprobs(model, tokenizer, p.text, responses).exp()  # (R,)
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


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def uniform_open_reward(world: ToyWorld) -> float:
    """Mean open reward of the uniform policy over the response space (a baseline)."""
    responses = enumerate_responses(world)
    per_prompt = [
        sum(world.reward(p, r) for r in responses) / len(responses) for p in world.open_prompts
    ]
    return sum(per_prompt) / len(per_prompt)


# ----------------------------------------------------------------------------- teacher, SFT


def teacher_sample(world: ToyWorld, prompt: ToyPrompt, rng: random.Random) -> str:
    """One draw from the SFT teacher (mixture weights FACT_KNOWN / FACT_UNKNOWN / OPEN_MIX)."""
    if prompt.family == "fact":
        return _teacher_fact(world, prompt, rng)
    return _teacher_open(world, prompt, rng)


def _pick(weights: dict[str, float], rng: random.Random) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _random_response(world: ToyWorld, rng: random.Random) -> str:
    n = rng.randint(1, world.max_response_tokens)
    return " ".join(rng.choice(world.alphabet) for _ in range(n))


def _teacher_fact(world: ToyWorld, prompt: ToyPrompt, rng: random.Random) -> str:
    kind = _pick(FACT_KNOWN if prompt.teacher_knows else FACT_UNKNOWN, rng)
    if kind == "answer":
        return str(prompt.answer)
    if kind == "belief":
        return str(prompt.teacher_belief)
    if kind == "same_category":
        skip = {prompt.answer, prompt.teacher_belief}
        others = [w for w in world.categories[prompt.category] if w not in skip]
        return rng.choice(others) if others else str(prompt.answer)
    return _random_response(world, rng)


def _teacher_open(world: ToyWorld, prompt: ToyPrompt, rng: random.Random) -> str:
    kind = _pick(OPEN_MIX, rng)
    words = world.categories[prompt.category]
    k = int(prompt.target_len or 1)
    if kind == "good" and k <= len(words):
        return " ".join(rng.sample(words, k))
    if kind in ("good", "mediocre"):
        # mediocre: any length, each word on-category only half the time
        n = rng.randint(1, world.max_response_tokens)
        return " ".join(
            rng.choice(words if rng.random() < 0.5 else world.alphabet) for _ in range(n)
        )
    return _random_response(world, rng)


def sft_corpus(world: ToyWorld) -> list[tuple[str, str]]:
    """(prompt, response) pairs: spec.sft_samples_per_prompt teacher draws per prompt."""
    rng = random.Random(f"sft-{world.spec.seed}")
    n = world.spec.sft_samples_per_prompt
    return [(p.text, teacher_sample(world, p, rng)) for p in world.prompts for _ in range(n)]


def train_sft(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: ToyWorld
) -> list[float]:
    """AdamW on the masked-policy NLL of the teacher corpus; returns the per-step losses."""
    spec = world.spec
    hook = response_hook(model, tokenizer)
    prompts, responses = zip(*sft_corpus(world), strict=True)
    enc = encode(tokenizer, prompts, responses)  # (N, T)
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.sft_lr, weight_decay=0.0)
    # Linear decay to 0: a short run still settles instead of ending on a noisy large step.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / spec.sft_steps)
    losses = []
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)  # dropout-free model, but keep any RNG use reproducible
        for _ in range(spec.sft_steps):
            idx = torch.randint(0, len(prompts), (spec.sft_batch_size,), generator=gen)
            batch = enc.rows(idx)
            logp = response_logps(model, batch, hook)  # (B,)
            loss = -logp.sum() / batch.response_mask.sum()  # per-token NLL
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


# ----------------------------------------------------------------------------- cache


_REQUIRED_FILES = ("world.json", "config.json", "model.safetensors", "tokenizer.json")


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _REQUIRED_FILES)


def fit_reference(spec: ToyWorldSpec, cache_dir: str | Path) -> Path:
    """Build the world, SFT pi_ref, save it under cache_dir/<recipe hash>; reuse if complete."""
    final = Path(cache_dir) / spec.recipe_hash()
    build_once(final, _complete, lambda tmp: _fit_into(spec, tmp))
    return final


def _fit_into(spec: ToyWorldSpec, out: Path) -> None:
    world = build_world(spec)
    tokenizer = build_tokenizer()
    model = build_model(spec, tokenizer)
    threads = torch.get_num_threads()
    # One thread: this model is too small to gain from intra-op parallelism, and on shared
    # cores a second OpenMP thread made SFT 20-40x slower (spin-waiting) in measurements.
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        losses = train_sft(model, tokenizer, world)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "recipe": RECIPE_VERSION,
        "recipe_hash": spec.recipe_hash(),
        "spec": asdict(spec),
        "prompts": [asdict(p) for p in world.prompts],
        "sft": {"seconds": seconds, "first_loss": losses[0], "final_loss": losses[-1]},
    }
    # world.json last: _complete() requires it, so it marks a finished write.
    (out / "world.json").write_text(json.dumps(meta, indent=2))


def load_world(
    path: str | Path,
) -> tuple[ToyWorld, PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a `fit_reference` directory: (world rebuilt from its spec, model, tokenizer)."""
    path = Path(path)
    meta = json.loads((path / "world.json").read_text())
    world = build_world(ToyWorldSpec(**meta["spec"]))
    if [asdict(p) for p in world.prompts] != meta["prompts"]:
        raise ValueError(f"{path}: world.json prompts differ from build_world(spec)")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    return world, model, tokenizer
