"""pi_ref: a brief SFT on a teacher's samples, fitted once per spec and cached; response scoring.

The teacher knows only some facts (`ToyWorldSpec.fact_known_rate`) and answers open prompts
with a mix of good and mediocre responses, so pi_ref's QA accuracy and open reward are both far
from their maxima. The SFT corpus covers the training and the held-out prompts alike: pi_ref
has seen every prompt, and only the preference data leave the held-out ones out. Every
log-prob here is the masked policy's (`didray.worlds.toy.mask`).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from didray.config.schema import TOY_RECIPE_VERSION, ToyWorldSpec
from didray.display import Progress
from didray.files import build_once, unusable
from didray.threads import torch_threads
from didray.worlds.text import batched_response_logps, encode, response_logps
from didray.worlds.toy.language import (
    ToyPrompt,
    ToyWorld,
    build_world,
)
from didray.worlds.toy.mask import response_hook
from didray.worlds.toy.model import build_model, build_tokenizer

# Teacher mixture weights: part of the recipe (bump TOY_RECIPE_VERSION when they change).
FACT_KNOWN = {"answer": 0.6, "same_category": 0.3, "random": 0.1}
FACT_UNKNOWN = {"belief": 0.5, "answer": 0.15, "same_category": 0.25, "random": 0.1}
OPEN_MIX = {"good": 0.5, "mediocre": 0.35, "random": 0.15}


# ----------------------------------------------------------------------------- exact scoring


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
    """(prompt, response) pairs: spec.sft_samples_per_prompt teacher draws per prompt,
    held-out prompts included."""
    rng = random.Random(f"sft-{world.spec.seed}")
    n = world.spec.sft_samples_per_prompt
    return [(p.text, teacher_sample(world, p, rng)) for p in world.all_prompts
            for _ in range(n)]


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
    with torch.random.fork_rng(devices=[]), Progress("pi_ref: SFT steps",
                                                     spec.sft_steps) as shown:
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
            shown.update()
    model.eval()
    return losses


# ----------------------------------------------------------------------------- cache


_REQUIRED_FILES = ("world.json", "config.json", "model.safetensors", "tokenizer.json")


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _REQUIRED_FILES)


def reference_problem(spec: ToyWorldSpec, cache_dir: str | Path) -> str | None:
    """Why the cached pi_ref of `spec` cannot be reused (absent, incomplete, damaged), or None."""
    return unusable(Path(cache_dir) / spec.recipe_hash(), _complete)


def fit_reference(spec: ToyWorldSpec, cache_dir: str | Path,
                  say: Callable[[str], None] | None = None) -> Path:
    """Build the world, SFT pi_ref, save it under cache_dir/<recipe hash>; reuse it if complete
    and intact (a damaged one is refitted, `say` tells why)."""
    final = Path(cache_dir) / spec.recipe_hash()
    build_once(final, _complete, lambda tmp: _fit_into(spec, tmp), say)
    return final


def _fit_into(spec: ToyWorldSpec, out: Path) -> None:
    world = build_world(spec)
    tokenizer = build_tokenizer()
    model = build_model(spec, tokenizer)
    start = time.perf_counter()
    # One thread: this model is too small to gain from intra-op parallelism, and on shared
    # cores a second OpenMP thread made SFT 20-40x slower (spin-waiting) in measurements.
    with torch_threads(1):
        losses = train_sft(model, tokenizer, world)
    seconds = time.perf_counter() - start
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "recipe": TOY_RECIPE_VERSION,
        "recipe_hash": spec.recipe_hash(),
        "spec": spec.model_dump(),
        "prompts": [asdict(p) for p in world.prompts],
        "heldout_prompts": [asdict(p) for p in world.heldout_prompts],
        "sft": {"seconds": seconds, "first_loss": losses[0], "final_loss": losses[-1]},
    }
    # world.json last: _complete() requires it, so it marks a finished write.
    (out / "world.json").write_text(json.dumps(meta, indent=2))


def read_world(path: str | Path) -> ToyWorld:
    """The world of a `fit_reference` directory, from its world.json only (no model loaded)."""
    meta = json.loads((Path(path) / "world.json").read_text())
    world = build_world(ToyWorldSpec(**meta["spec"]))
    drawn = {"prompts": world.prompts, "heldout_prompts": world.heldout_prompts}
    if any([asdict(p) for p in drawn[key]] != meta[key] for key in drawn):
        raise ValueError(f"{path}: world.json prompts differ from build_world(spec)")
    return world


def load_world(
    path: str | Path,
) -> tuple[ToyWorld, PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a `fit_reference` directory: (world rebuilt from its spec, model, tokenizer)."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return read_world(path), model, PreTrainedTokenizerFast.from_pretrained(path)
