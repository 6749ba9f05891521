"""The prepare stage: pi_ref, each regime's dataset, the reference log-prob caches and, in the
hf world, pi_ref's evaluation samples.

Everything here is keyed by a content hash of all it is built from (never a sweep's or a
regime's name) and kept in a store that every sweep under one storage shares,
`<storage>/cache/` (`Store`): a second sweep with the same world, regime and data settings, a
resumed one or an extended one reuses what is there. Entries are written atomically and sealed
with the size and sha256 of their files (written last), so an intact entry is reused and a
truncated or altered one rebuilt, saying why; `Caches` counts what was actually computed, for
the manifest. pi_ref's draws come from the sampler actors, started on
first use (a fully cached prepare starts none). Reference log-probs run as a Ray task with a
training worker's resources, through the code training uses, so step 0 of every trial sits
exactly at pi_ref.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import ray
import torch
from transformers import AutoTokenizer

from didray import display
from didray.config.schema import Scorer, Sweep
from didray.config.trial import dataset_key, threads_for
from didray.data.regimes import Sources, build_pairs, warnings
from didray.data.sources import PoolFactory, hf_sources, toy_sources
from didray.data.tensors import PairTensors, save_pair_tensors
from didray.errors import BadInput
from didray.eval import hf as hf_eval
from didray.eval.scorer_actor import LazyScorer
from didray.files import build_once, content_hash, file_damage, seal_path, sealed_write, unusable
from didray.sampling.pool import SamplerPool
from didray.sampling.sampler import resolve_backend
from didray.storage import Storage
from didray.threads import torch_threads
from didray.worlds import hf, hf_data, toy
from didray.worlds.policy import load_policy
from didray.worlds.text import batched_response_logps, encode, prompt_ids, prompt_text

Progress = Callable[[str], None]


@dataclass
class Caches:
    """How many times each cache entry was computed in this run (0: reused)."""

    computed: dict[str, int] = field(default_factory=dict)

    def note(self, key: str, computed: bool) -> None:
        self.computed[key] = self.computed.get(key, 0) + int(computed)


@dataclass(frozen=True)
class Store:
    """The content-keyed cache shared by the sweeps under one storage. Two sweeps building the
    same entry at once are safe: directories go in whole with `build_once` (the loser of the
    race keeps the winner's), files with `sealed_write` (either writer's complete file; a seal
    left describing the other's file reads as damage, rebuilt, never as a wrong entry).
    On a remote storage entries are built in the local mirror: `fetch` pulls one the mirror
    cannot reuse, `keep` pushes one just built."""

    storage: Storage

    @classmethod
    def of(cls, sweep: Sweep) -> Store:
        return cls(Storage.of(sweep.storage))

    @property
    def root(self) -> Path:
        return self.storage.local / "cache"

    def fetch(self, path: Path, problem: Callable[[], str | None]) -> None:
        """Pull the entry at `path` when the mirror's copy has a `problem()`."""
        if self.storage.remote and problem() is not None:
            self.storage.pull(path, seal_path(path))

    def keep(self, path: Path) -> None:
        self.storage.push(path, seal_path(path))

    def data(self, key: str) -> Path:
        return self.root / "data" / key

    def ref(self, key: str) -> Path:
        return self.root / "ref" / f"{key}.safetensors"

    def enumeration(self, key: str) -> Path:
        return self.root / "enum" / f"{key}.pt"

    def eval(self, key: str) -> Path:
        return self.root / "eval" / f"{key}.json"


@dataclass(frozen=True)
class PreparedRegime:
    name: str
    data_dir: Path  # the datasets.Dataset (TRL columns + metadata)
    data_hash: str
    ref_file: Path  # token tensors + reference log-probs, shared by every trial of the regime
    ref_hash: str
    n_pairs: int
    stats: dict  # data_* columns: what the data encode (didray.data.regimes.Built.stats)


@dataclass(frozen=True)
class PreparedSweep:
    world_dir: Path
    world_hash: str
    regimes: dict[str, PreparedRegime]  # by dataset_key (config.trial)
    enum_file: Path | None = None  # toy: pi_ref's log-prob of every (prompt, response): (P, R)
    eval_file: Path | None = None  # hf: pi_ref's evaluation samples and scores


@dataclass(frozen=True)
class World:
    """A loaded world, as prepare needs it."""

    dir: Path
    hash: str
    sources: Callable[[PoolFactory], Sources]
    score_key: object = None  # what pair scores depend on besides the world (hf: the scorer)
    # hf: the scorer actors, the data's first and the evaluation's last (one where the sweep
    # gives one scorer); all are released with the sampler pool
    scorers: tuple[LazyScorer, ...] = ()
    enum_file: Path | None = None
    evaluate_ref: Callable[[PoolFactory], Path] | None = None  # hf: writes the eval file


class LazyPool:
    """The sampler pool over pi_ref, started on first call; `close` releases its actors."""

    def __init__(self, world_dir: Path, sweep: Sweep, progress: Progress) -> None:
        self.world_dir, self.sweep, self.progress = world_dir, sweep, progress
        self.pool: SamplerPool | None = None

    def __call__(self) -> SamplerPool:
        if self.pool is None:
            s = self.sweep.sampler
            self.progress(f"sampler: starting {s.actors} {resolve_backend(s.backend)} "
                          "actor(s) on pi_ref")
            self.pool = SamplerPool(self.world_dir, s, model_dtype(self.sweep))
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def model_dtype(sweep: Sweep) -> str:
    return sweep.model.hf.dtype if sweep.world == "hf" else "float32"


def reusable(path: Path, problem: str | None, progress: Progress) -> bool:
    """Whether the cache entry `path` can be reused (`problem` is why not); a damaged one is
    rebuilt, and the user told so."""
    if problem is not None and path.exists():
        progress(f"cache: {path.name} cannot be reused ({problem}); rebuilding it")
    return problem is None


def check_prompt_lengths(world: toy.ToyWorld, tokenizer, max_prompt: int) -> None:
    """Truncated prompts would train on text that exact evaluation never scores."""
    longest = max(len(tokenizer.encode(prompt_text(tokenizer, p.text), add_special_tokens=False))
                  for p in world.all_prompts)
    if longest > max_prompt:
        raise BadInput(f"train.max_prompt_tokens={max_prompt} would truncate toy prompts of "
                       f"{longest} tokens; set it to at least {longest}")


def row_rules(world_dir: Path, sweep: Sweep) -> hf_data.RowRules:
    """The trainer keeps a prompt's last train.max_prompt_tokens tokens while pi_ref's samplers
    read all of it, so a longer prompt is a bad row (docs/design.md §3.3)."""
    tokenizer = AutoTokenizer.from_pretrained(str(world_dir))
    limit = sweep.train.max_prompt_tokens
    return hf_data.RowRules(sweep.data.max_bad_fraction,
                            lambda prompt: len(prompt_ids(tokenizer, prompt)) > limit)


def preference_rows(sweep: Sweep, split: str, limit: int | None, rules: hf_data.RowRules,
                    progress: Progress) -> list[dict[str, str]]:
    """A split's usable rows: the bad ones dropped with a progress line, or refused."""
    data = sweep.data
    rows = hf_data.load_preference_rows(data.source, split, limit,
                                        hf_data.Pin(data.config, data.revision))
    return hf_data.usable_rows(rows, rules, f"data.source {data.source!r} split {split!r}",
                               progress)


def toy_world(sweep: Sweep, caches: Caches, progress: Progress) -> World:
    """Fit (or reuse) the toy pi_ref and enumerate its log-probs once for exact evaluation."""
    spec = sweep.model.toy
    world_hash = spec.recipe_hash()
    store = Store.of(sweep)
    store.fetch(store.root / "toy" / world_hash,
                lambda: toy.reference_problem(spec, store.root / "toy"))
    cached = toy.reference_problem(spec, store.root / "toy") is None
    progress(f"pi_ref: toy world {world_hash} ({'cached' if cached else 'fitting by SFT'})")
    world_dir = toy.fit_reference(spec, store.root / "toy", say=progress)
    if not cached:
        store.keep(world_dir)
    caches.note(f"pi_ref/{world_hash}", not cached)
    world, model, tokenizer = toy.load_world(world_dir)
    check_prompt_lengths(world, tokenizer, sweep.train.max_prompt_tokens)

    # A function of the world and of how it is enumerated: trials enumerate their policy the
    # same way, so a policy equal to pi_ref scores exactly pi_ref's table.
    enum_file = store.enumeration(content_hash(world_hash, toy.ENUMERATION))
    store.fetch(enum_file, lambda: file_damage(enum_file))
    fresh = not reusable(enum_file, file_damage(enum_file), progress)
    if fresh:
        progress(f"pi_ref: enumerating {len(world.all_prompts)} prompts x "
                 f"{toy.response_space_size(world)} responses")
        table = toy.enumerate_logps(model, tokenizer, world)  # (P, R)
        sealed_write(enum_file, lambda tmp: torch.save(table, tmp))
        store.keep(enum_file)
    caches.note(f"enumeration/{world_hash}", fresh)
    return World(world_dir, world_hash, lambda pool: toy_sources(world, sweep, pool),
                 enum_file=enum_file)


def hf_world(sweep: Sweep, caches: Caches, progress: Progress) -> World:
    """pi_ref as published (a GGUF dequantised once), the training prompts of data.split, the
    held-out evaluation prompts of eval.split, and the scorers."""
    m, data, ev = sweep.model.hf, sweep.data, sweep.eval
    progress(f"pi_ref: {m.path}" + (f" ({m.gguf_file})" if m.gguf_file else ""))
    world_dir = materialized(m, Store.of(sweep))
    world_hash = content_hash(m.model_dump(exclude={"gradient_checkpointing"}),
                              hf.weights_key(m.path, m.revision, str(world_dir)))
    rules = row_rules(world_dir, sweep)
    rows = preference_rows(sweep, data.split, data.max_prompts, rules, progress)
    held_out = preference_rows(sweep, ev.split, ev.prompts, rules, progress)
    prompts = [r["prompt"] for r in held_out]
    hf_data.check_heldout([r["prompt"] for r in rows], prompts, data.source,
                          (data.split, ev.split))
    progress(f"data: {len(rows)} training prompts ({data.split}) and {len(prompts)} evaluation "
             f"prompts ({ev.split}) from {data.source}")
    # Started on first use: a rerun whose data and eval samples are cached needs no scorer
    # (a reward model can take minutes to load). One scorer builds the data, another judges
    # the policies where the sweep gives two (docs/design.md §6.2).
    if data.scorer is None:
        judge = builder = LazyScorer(ev.scorer, reference_answers(rows + held_out), progress)
    else:
        judge = LazyScorer(ev.scorer, reference_answers(held_out), progress)
        builder = LazyScorer(data.scorer, reference_answers(rows), progress)
    tilted = sweep.tilted_regimes()
    if tilted and scorer_key(builder.settings) == scorer_key(judge.settings):
        progress(f"warning: one scorer ({judge.settings.kind} {judge.settings.path}) tilts "
                 f"the data of {', '.join(tilted)} and scores instruction_score, so the score "
                 "rewards what the data were built from (docs/design.md §7.2); give "
                 "data.scorer another model to judge with one the data never saw")
    # A tilt's data DID entropy is an SNIS estimate from eval.did_samples draws per prompt.
    # The rows are in the key: which are kept depends on the file's content and on
    # train.max_prompt_tokens, neither of which data.* names.
    score_key = {**scorer_key(builder.settings), "did_samples": ev.did_samples,
                 "rows": content_hash(rows)}

    def evaluate_ref(pool: PoolFactory) -> Path:
        # "cut-v1": the file stores sampled token ids and whether each sample finished;
        # older files without them regenerate.
        # The report schedule (`every`) does not change pi_ref's evaluation.
        key = content_hash(world_hash, prompts,
                           ev.model_dump(exclude={"every": True, "scorer": True}),
                           scorer_key(judge.settings), sampling_key(sweep), "cut-v1")
        store = Store.of(sweep)
        path = store.eval(key)
        store.fetch(path, lambda: file_damage(path))
        fresh = not reusable(path, file_damage(path), progress)
        if fresh:
            progress(f"eval: pi_ref's samples and greedy responses on {len(prompts)} prompts")
            text = json.dumps(hf_eval.reference_eval(pool(), prompts, sweep, judge,
                                                     reference_answers(held_out)),
                              indent=2, default=str)
            sealed_write(path, lambda tmp: Path(tmp).write_text(text))
            store.keep(path)
        caches.note(f"ref-eval/{key}", fresh)
        return path

    return World(world_dir, world_hash, lambda pool: hf_sources(rows, builder, sweep, pool),
                 score_key=score_key, scorers=tuple(dict.fromkeys((builder, judge))),
                 evaluate_ref=evaluate_ref)


def reference_answers(rows: list[dict]) -> dict[str, str]:
    """The embedding scorer's reference response of each prompt that has one."""
    return {r["prompt"]: r["reference"] for r in rows if r.get("reference")}


def scorer_key(settings: Scorer) -> dict:
    """What a scorer's scores depend on: its settings bar its resources, a local model's
    files."""
    return {"scorer": settings.model_dump(exclude={"cpus", "gpus"}),
            "weights": hf.weights_key(settings.path)}


def materialized(m, store: Store) -> Path:
    """pi_ref's directory: a hub or local model as it is (a pinned revision downloaded into
    the store), a GGUF file dequantised once into the store (pulled from a remote storage, or
    pushed to it once built)."""
    cache = store.root / "hf"
    if m.gguf_file is None:
        return Path(hf.materialize_model(m.path, None, cache, m.revision))
    final = hf.gguf_entry(hf.model_source(m.path, m.revision, cache), m.gguf_file, cache)
    problem = functools.partial(unusable, final, hf.complete_model, hashed=False)
    store.fetch(final, problem)
    built = problem() is not None
    world_dir = Path(hf.materialize_model(m.path, m.gguf_file, cache, m.revision))
    if built:
        store.keep(world_dir)
    return world_dir


def sampling_key(sweep: Sweep) -> dict:
    """What pi_ref's draws depend on besides the world and the seed."""
    s = sweep.sampler
    return {"backend": resolve_backend(s.backend), "temperature": s.temperature,
            "max_tokens": s.max_tokens}


def reference_caches(world_dir: str, dtype: str, jobs: list[tuple[list[str], list[str]]],
                     lengths: tuple[int, int], threads: int) -> list[PairTensors]:
    """Tokenise each job's (prompts, responses) and score them under pi_ref, loaded once for
    all of them (in the driver, or as a Ray task where a GPU or an hf model is asked)."""
    model, tokenizer, hook = load_policy(world_dir, dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    out = []
    # A Ray task's output reaches the driver's log line by line: plain k/N lines, no bar.
    sequences = sum(len(prompts) for prompts, _ in jobs)
    with (torch_threads(threads),
          display.Progress("data: reference log-probs, sequences", sequences) as shown):
        for prompts, responses in jobs:
            enc = encode(tokenizer, prompts, responses, *lengths)
            ref = batched_response_logps(model, enc.to(device), hook, batch_size=16,
                                         progress=shown)
            out.append(PairTensors(enc, ref.float().cpu()))
    return out


def compute_references(sweep: Sweep, world_dir: Path, jobs: list[tuple[list[str], list[str]]],
                       lengths: tuple[int, int]) -> list[PairTensors]:
    """The toy world's reference log-probs on a CPU are computed in the driver: a Ray task
    would start a worker process (importing torch and transformers) for a model of a few
    thousand parameters and sequences of a dozen tokens (docs/design.md §3, step 3). Elsewhere
    one Ray task holds a training worker's resources (a GPU if asked) and loads pi_ref once."""
    scaling = sweep.scaling
    args = (str(world_dir), model_dtype(sweep), jobs, lengths,
            threads_for(scaling.cpus_per_worker))
    if sweep.world == "toy" and not scaling.gpus_per_worker:
        return reference_caches(*args)
    task = ray.remote(reference_caches).options(  # Ray: a training worker's resources
        num_cpus=scaling.cpus_per_worker, num_gpus=scaling.gpus_per_worker)
    return ray.get(task.remote(*args))


def prepare(sweep: Sweep, caches: Caches, progress: Progress) -> PreparedSweep:
    """pi_ref, then every swept regime's data and reference cache (needs Ray started).

    The sampler and scorer actors are closed before any reference task starts, and the data's
    own scorer before the evaluation's starts: on a small node they could not all hold their
    CPUs at once."""
    world = (toy_world if sweep.world == "toy" else hf_world)(sweep, caches, progress)
    pool = LazyPool(world.dir, sweep, progress)
    try:
        sources = world.sources(pool)
        data = {dataset_key(name, seed): build_regime(sweep, name, seed, world, sources,
                                                      caches, progress)
                for name, seed in sweep.datasets()}
        for scorer in world.scorers[:-1]:
            scorer.close()
        eval_file = world.evaluate_ref(pool) if world.evaluate_ref else None
    finally:
        pool.close()
        for scorer in world.scorers:
            scorer.close()
    regimes = references(sweep, world, data, caches, progress)
    return PreparedSweep(world.dir, world.hash, regimes, world.enum_file, eval_file)


def build_regime(sweep: Sweep, name: str, seed: int | None, world: World, sources: Sources,
                 caches: Caches, progress: Progress) -> tuple[str, Path, str, dict]:
    """The regime's dataset at data seed `seed` (None: the file's data.seed), built once
    (keyed by its recipe, not its name: two sweeps naming one regime differently share it):
    the regime's name, its directory, hash and the `data_*` statistics of what it encodes
    (kept in the dataset's metadata, which holds no name either)."""
    regime, data_cfg = sweep.regime(name), sweep.data
    if seed is not None:
        data_cfg = data_cfg.model_copy(update={"seed": seed})
    shown = dataset_key(name, seed)
    sampled = sampling_key(sweep) if regime.kind != "offpolicy" else None
    # "stats-v1": datasets carry their data_* statistics; older ones are rebuilt.
    recipe = regime.model_dump(exclude={"name"})
    # max_bad_fraction decides only whether the data are refused, not what they hold.
    data_hash = content_hash(world.hash, recipe, data_cfg.model_dump(exclude={"max_bad_fraction"}),
                             world.score_key, sampled, "stats-v1")
    store = Store.of(sweep)
    data_dir = store.data(data_hash)
    store.fetch(data_dir, lambda: unusable(data_dir, Path.exists))
    built = not reusable(data_dir, unusable(data_dir, Path.exists), progress)
    if built:
        progress(f"data: building regime {shown!r} ({regime.kind})")
        pairs = build_pairs(regime, sources, data_cfg.pairs_per_prompt, data_cfg.seed)
        meta = {"regime": recipe, "data_hash": data_hash, "world_hash": world.hash,
                "stats": pairs.stats()}
        dataset = datasets.Dataset.from_list(pairs.rows, info=datasets.DatasetInfo(
            description=f"didray regime ({regime.kind})", config_name=json.dumps(meta)))
        build_once(data_dir, Path.exists, lambda tmp: dataset.save_to_disk(str(tmp)))
        store.keep(data_dir)
    caches.note(f"data/{data_hash}", built)
    stats = regime_stats(data_dir)
    if stats["data_did_entropy"] is not None:
        progress(f"data: {shown!r} encodes a DID entropy of {stats['data_did_entropy']:.3f} nats "
                 f"({stats['data_did_entropy_method']}, "
                 + (f"tau {stats['tau']:.4g})" if stats["tau"] else "labels deterministic in "
                    "the score: the tau -> 0 limit)"))
    for warning in warnings(stats, getattr(regime, "candidates", None)):
        progress(f"warning: regime {shown!r}: {warning}")
    return name, data_dir, data_hash, stats


def regime_stats(data_dir: Path) -> dict:
    """The `data_*` statistics stored with a built dataset."""
    meta = json.loads(datasets.Dataset.load_from_disk(str(data_dir)).info.config_name)
    return meta["stats"]


def references(sweep: Sweep, world: World, data: dict[str, tuple[str, Path, str, dict]],
               caches: Caches, progress: Progress) -> dict[str, PreparedRegime]:
    """Each regime's reference cache, computed once (keyed by model, data, max lengths and
    the device kind: trials compare their log-probs with these, so a GPU sweep does not reuse
    a CPU sweep's); the missing ones all at once (`compute_references`)."""
    train, scaling = sweep.train, sweep.scaling
    lengths = (train.max_prompt_tokens, train.max_response_tokens)
    regimes, missing = {}, {}
    for key, (name, data_dir, data_hash, stats) in data.items():
        dataset = datasets.load_from_disk(str(data_dir))
        if len(dataset) < train.batch_size:
            raise BadInput(f"regime {key!r} has {len(dataset)} pairs, fewer than "
                           f"train.batch_size={train.batch_size}; raise data.pairs_per_prompt")
        device = "gpu" if scaling.gpus_per_worker else "cpu"
        ref_hash = content_hash(world.hash, data_hash, lengths, device)
        store = Store.of(sweep)
        ref_file = store.ref(ref_hash)
        store.fetch(ref_file, lambda ref_file=ref_file: file_damage(ref_file))
        regimes[key] = PreparedRegime(name, data_dir, data_hash, ref_file, ref_hash,
                                       len(dataset), stats)
        # Two regimes of one sweep may differ by name alone: one computation for both.
        fresh = ref_file not in missing and not reusable(ref_file, file_damage(ref_file),
                                                         progress)
        caches.note(f"ref/{ref_hash}", fresh)
        if fresh:
            progress(f"data: reference log-probs for {key!r} ({len(dataset)} pairs)")
            missing[ref_file] = (list(dataset["prompt"]) * 2,
                                 list(dataset["chosen"]) + list(dataset["rejected"]))
    if missing:
        computed = compute_references(sweep, world.dir, list(missing.values()), lengths)
        for ref_file, ref in zip(missing, computed, strict=True):
            save_pair_tensors(ref, ref_file)
            store.keep(ref_file)
    return regimes
