"""A pool of sampler actors: `ray.remote(Sampler)` is applied here, where the actors are made.

Prompts are split over the actors in contiguous shards and the answers put back in order.
Each prompt's random stream is seeded from (seed, prompt text) inside the sampler, so the
draws do not depend on how many actors there are.
"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from didray.config.schema import SamplerSettings
from didray.config.trial import threads_for
from didray.sampling.sampler import Completion, Sampler, resolve_backend


def actor_env(backend: str) -> dict:
    """The vLLM engine reads its settings from the environment at import time."""
    if backend != "vllm":
        return {}
    from didray.sampling.vllm_backend import VLLM_ENV

    return {"env_vars": VLLM_ENV}


def shards(n_items: int, n_parts: int) -> list[slice]:
    """Contiguous, nearly equal slices covering range(n_items); never an empty one."""
    parts = min(n_parts, n_items)
    bounds = [round(i * n_items / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


class SamplerPool:
    """`settings.actors` sampler actors serving one model; use as a context manager so the
    actors (and the CPUs or GPUs they hold) are released when the work is done."""

    def __init__(self, model_dir: str | Path, settings: SamplerSettings,
                 dtype: str = "float32") -> None:
        self.backend = resolve_backend(settings.backend)
        threads = threads_for(settings.cpus_per_actor)
        remote = ray.remote(Sampler).options(  # Ray: one process per actor
            num_cpus=settings.cpus_per_actor, num_gpus=settings.gpus_per_actor,
            max_concurrency=1,  # an engine is not thread-safe: calls queue up
            runtime_env=actor_env(self.backend),
            # Not inside the caller's placement group (a Tune trial's holds no CPU): the
            # actors take the cluster's free resources like any other.
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
        self.actors = [remote.remote(str(model_dir), self.backend, dtype, threads)
                       for _ in range(settings.actors)]

    def __enter__(self) -> SamplerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)  # Ray: frees the actor's resources at once
        self.actors = []

    def _map(self, method: str, columns: list[list], **kwargs) -> list:
        if not columns[0]:
            return []
        parts = shards(len(columns[0]), len(self.actors))
        refs = [getattr(actor, method).remote(*(c[s] for c in columns), **kwargs)
                for actor, s in zip(self.actors, parts, strict=False)]
        return [row for part in ray.get(refs) for row in part]  # Ray: wait for every shard

    def generate(self, prompts: list[str], n: int, **kwargs) -> list[list[Completion]]:
        """`Sampler.generate` over the pool: n completions per prompt, in prompt order."""
        return self._map("generate", [prompts], n=n, **kwargs)

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """`Sampler.score` over the pool, in input order."""
        return self._map("score", [prompts, completions])

    def score_ids(self, prompts: list[str], responses: list[list[int]]) -> list[float]:
        """`Sampler.score_ids` over the pool, in input order."""
        return self._map("score_ids", [prompts, responses])

    def reload_weights(self, model_dir: str | Path) -> None:
        ray.get([a.reload_weights.remote(str(model_dir)) for a in self.actors])
