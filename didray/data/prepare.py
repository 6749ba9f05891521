"""The prepare stage: pi_ref, each regime's dataset, and the reference log-prob caches.

Everything here is keyed by a content hash and written atomically, so a second run (or a
resumed one) reuses it; `Caches` counts what was actually computed, for the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from safetensors.torch import load_file, save_file

from didray.config.schema import Sweep
from didray.data.regimes import Sources, build_pairs
from didray.errors import BadInput
from didray.sweep.results import content_hash
from didray.train.loop import PairTensors
from didray.worlds import toy
from didray.worlds.text import Encoded, batched_response_logps, encode, prompt_text

Progress = Callable[[str], None]


@dataclass
class Caches:
    """How many times each cache entry was computed in this run (0: reused)."""

    computed: dict[str, int] = field(default_factory=dict)

    def note(self, key: str, computed: bool) -> None:
        self.computed[key] = self.computed.get(key, 0) + int(computed)


@dataclass(frozen=True)
class PreparedRegime:
    name: str
    data_dir: Path  # the datasets.Dataset (TRL columns + metadata)
    data_hash: str
    ref_file: Path  # token tensors + reference log-probs, shared by every trial of the regime
    ref_hash: str
    n_pairs: int


@dataclass(frozen=True)
class PreparedSweep:
    world_dir: Path
    world_hash: str
    enum_file: Path  # pi_ref's log-prob of every (prompt, response): (P, R)
    regimes: dict[str, PreparedRegime]


def toy_spec(sweep: Sweep) -> toy.ToyWorldSpec:
    t = sweep.model.toy
    return toy.ToyWorldSpec(seed=t.seed, n_open_prompts=t.n_open_prompts,
                            n_fact_prompts=t.n_fact_prompts, sft_steps=t.sft_steps,
                            max_response_tokens=t.max_response_tokens)


def check_prompt_lengths(world: toy.ToyWorld, tokenizer, max_prompt: int) -> None:
    """Truncated prompts would train on text that exact evaluation never scores."""
    longest = max(len(tokenizer.encode(prompt_text(tokenizer, p.text), add_special_tokens=False))
                  for p in world.prompts)
    if longest > max_prompt:
        raise BadInput(f"train.max_prompt_tokens={max_prompt} would truncate toy prompts of "
                       f"{longest} tokens; set it to at least {longest}")


def toy_sources(world: toy.ToyWorld, ref_table: torch.Tensor) -> Sources:
    """Samplers over the enumerated space: exact draws from pi_ref's table and from uniform."""
    responses = toy.enumerate_responses(world)
    index = {p.text: i for i, p in enumerate(world.prompts)}
    probs = ref_table.exp()  # (P, R)

    def sample_ref(prompt: str, n: int, g: torch.Generator) -> list[str]:
        idx = torch.multinomial(probs[index[prompt]], n, replacement=True, generator=g)
        return [responses[i] for i in idx.tolist()]

    def sample_uniform(prompt: str, n: int, g: torch.Generator) -> list[str]:
        return [responses[i] for i in torch.randint(len(responses), (n,), generator=g).tolist()]

    def best(prompt: str) -> str:
        return max(responses, key=lambda r: world.reward(prompt, r))

    return Sources([p.text for p in world.prompts], [p.family for p in world.prompts],
                   world.reward, sample_ref, sample_uniform, best)


def _atomic_dir(final: Path, write: Callable[[Path], None]) -> None:
    """Write a directory under a temporary name, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_pair_tensors(data: PairTensors, path: Path) -> None:
    tensors = {"input_ids": data.enc.input_ids, "attention_mask": data.enc.attention_mask,
               "response_mask": data.enc.response_mask, "ref_logps": data.ref_logps}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp)
    os.replace(tmp, path)


def load_pair_tensors(path: Path) -> PairTensors:
    t = load_file(path)
    return PairTensors(Encoded(t["input_ids"], t["attention_mask"], t["response_mask"]),
                       t["ref_logps"])


def prepare(sweep: Sweep, sweep_dir: Path, caches: Caches, progress: Progress) -> PreparedSweep:
    """Fit (or reuse) pi_ref, then build every swept regime's data and reference cache."""
    spec = toy_spec(sweep)
    world_hash = spec.recipe_hash()
    cache_root = sweep.storage / "cache"
    cached = (cache_root / "toy" / world_hash).is_dir()
    progress(f"pi_ref: toy world {world_hash} ({'cached' if cached else 'fitting by SFT'})")
    world_dir = toy.fit_reference(spec, cache_root / "toy")
    caches.note(f"pi_ref/{world_hash}", not cached)
    world, model, tokenizer = toy.load_world(world_dir)

    check_prompt_lengths(world, tokenizer, sweep.train.max_prompt_tokens)
    enum_file = sweep_dir / "data" / f"ref-enumeration-{world_hash}.pt"
    fresh = not enum_file.exists()
    if fresh:
        progress(f"pi_ref: enumerating {len(world.prompts)} prompts x "
                 f"{toy.response_space_size(world)} responses")
        enum_file.parent.mkdir(parents=True, exist_ok=True)
        table = toy.enumerate_logps(model, tokenizer, world)  # (P, R)
        torch.save(table, enum_file.with_suffix(".tmp"))
        os.replace(enum_file.with_suffix(".tmp"), enum_file)
    caches.note(f"enumeration/{enum_file.stem}", fresh)
    ref_table = torch.load(enum_file)
    sources = toy_sources(world, ref_table)

    regimes = {}
    for name in sweep.regime_names():
        regimes[name] = prepare_regime(sweep, name, world_hash, sources, model, tokenizer,
                                       sweep_dir, caches, progress)
    return PreparedSweep(world_dir, world_hash, enum_file, regimes)


def prepare_regime(
    sweep: Sweep, name: str, world_hash: str, sources: Sources, model, tokenizer,
    sweep_dir: Path, caches: Caches, progress: Progress,
) -> PreparedRegime:
    """Build the regime's dataset once (keyed by its recipe) and its reference cache once
    (keyed by model, tokenizer, data and max lengths); reuse both when present."""
    regime, data_cfg, train = sweep.regime(name), sweep.data, sweep.train
    data_hash = content_hash(world_hash, regime.model_dump(), data_cfg.model_dump())
    data_dir = sweep_dir / "data" / f"{name}-{data_hash}"
    built = not data_dir.exists()
    if built:
        progress(f"data: building regime {name!r} ({regime.kind})")
        rows = build_pairs(regime, sources, data_cfg.pairs_per_prompt, data_cfg.seed)
        meta = {"regime": regime.model_dump(), "data_hash": data_hash, "world_hash": world_hash}
        dataset = datasets.Dataset.from_list(rows, info=datasets.DatasetInfo(
            description=f"didray regime {name}", config_name=json.dumps(meta)))
        _atomic_dir(data_dir, lambda tmp: dataset.save_to_disk(str(tmp)))
    caches.note(f"data/{name}-{data_hash}", built)
    dataset = datasets.load_from_disk(str(data_dir))
    if len(dataset) < train.batch_size:
        raise BadInput(f"regime {name!r} has {len(dataset)} pairs, fewer than "
                         f"train.batch_size={train.batch_size}; raise data.pairs_per_prompt")

    lengths = (train.max_prompt_tokens, train.max_response_tokens)
    ref_hash = content_hash(world_hash, data_hash, lengths)
    ref_file = data_dir.parent / f"{name}-{data_hash}.ref-{ref_hash}.safetensors"
    fresh = not ref_file.exists()
    if fresh:
        progress(f"data: reference log-probs for {name!r} ({len(dataset)} pairs)")
        prompts = list(dataset["prompt"]) * 2
        responses = list(dataset["chosen"]) + list(dataset["rejected"])
        enc = encode(tokenizer, prompts, responses, *lengths)
        ref = batched_response_logps(model, enc, toy.response_hook(model, tokenizer))  # (2N,)
        save_pair_tensors(PairTensors(enc, ref), ref_file)
    caches.note(f"ref/{ref_hash}", fresh)
    return PreparedRegime(name, data_dir, data_hash, ref_file, ref_hash, len(dataset))
