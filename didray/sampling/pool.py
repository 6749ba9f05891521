"""A pool of sampler actors: `ray.remote(Sampler)` is applied here, where the actors are made.

Prompts are split over the actors in contiguous shards and the answers put back in order.
Each prompt's random stream is seeded from (seed, prompt text) inside the sampler, so the
draws do not depend on how many actors there are.

Ray restarts an actor whose process dies and reruns the calls it was serving: each call is
idempotent (the draws are seeded per prompt, scores are deterministic), and each names the
weights it expects, since a restarted actor starts on the weights it was made with.
"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from didray.config.schema import SamplerSettings
from didray.config.trial import threads_for
from didray.display import Progress
from didray.sampling.completions import Completion
from didray.sampling.sampler import Sampler, resolve_backend

# Shards per actor when progress is shown: each finished shard is a step of the display (the
# draws do not depend on the batching, see above).
SHOWN_SHARDS = 4


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


# Ray: a dead sampler actor is replaced, and its calls rerun, this many times.
RESTARTS = 3


class PooledSampler(Sampler):
    """A sampler actor that serves the weights each call names, loading them first where a
    restart left it on the weights it was made with (pi_ref, not the trial's checkpoint)."""

    def __init__(self, model_dir: str, backend: str, dtype: str, threads: int) -> None:
        super().__init__(model_dir, backend, dtype, threads)
        self.weights = model_dir

    def use(self, weights: str) -> None:
        if weights != self.weights:
            self.reload_weights(weights)
            self.weights = weights

    def serve(self, weights: str, method: str, *args, **kwargs) -> list:
        self.use(weights)
        return getattr(self, method)(*args, **kwargs)


class SamplerPool:
    """`settings.actors` sampler actors serving one model; use as a context manager so the
    actors (and the CPUs or GPUs they hold) are released when the work is done."""

    def __init__(self, model_dir: str | Path, settings: SamplerSettings,
                 dtype: str = "float32") -> None:
        self.backend = resolve_backend(settings.backend)
        threads = threads_for(settings.cpus_per_actor)
        remote = ray.remote(PooledSampler).options(  # Ray: one process per actor
            num_cpus=settings.cpus_per_actor, num_gpus=settings.gpus_per_actor,
            max_concurrency=1,  # an engine is not thread-safe: calls queue up
            max_restarts=RESTARTS, max_task_retries=RESTARTS,
            runtime_env=actor_env(self.backend),
            # Not inside the caller's placement group (a Tune trial's holds no CPU): the
            # actors take the cluster's free resources like any other.
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
        self.weights = str(model_dir)
        self.actors = [remote.remote(self.weights, self.backend, dtype, threads)
                       for _ in range(settings.actors)]

    def __enter__(self) -> SamplerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for actor in self.actors:
            ray.kill(actor)  # Ray: frees the actor's resources at once, no restart
        self.actors = []

    def _map(self, method: str, columns: list[list], shown: str | None = None,
             **kwargs) -> list:
        """`method` over the rows of `columns`, in order. `shown`: a progress display of that
        name counts the rows done, over SHOWN_SHARDS shards per actor."""
        if not columns[0]:
            return []
        per_actor = SHOWN_SHARDS if shown else 1
        parts = shards(len(columns[0]), len(self.actors) * per_actor)
        refs = [self.actors[i % len(self.actors)].serve.remote(
                    self.weights, method, *(c[s] for c in columns), **kwargs)
                for i, s in enumerate(parts)]
        if shown:
            with Progress(shown, len(columns[0])) as progress:
                pending = list(refs)
                while pending:
                    done, pending = ray.wait(pending)  # Ray: the next finished shard
                    progress.update(len(ray.get(done[0])))
        return [row for part in ray.get(refs) for row in part]  # Ray: wait for every shard

    def generate(self, prompts: list[str], n: int, **kwargs) -> list[list[Completion]]:
        """`Sampler.generate` over the pool: n completions per prompt, in prompt order."""
        return self._map("generate", [prompts], shown=f"sampler: prompts ({n} draws each)",
                         n=n, **kwargs)

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """`Sampler.score` over the pool, in input order."""
        return self._map("score", [prompts, completions])

    def score_ids(self, prompts: list[str], responses: list[list[int]]) -> list[float]:
        """`Sampler.score_ids` over the pool, in input order."""
        return self._map("score_ids", [prompts, responses])

    def reload_weights(self, model_dir: str | Path) -> None:
        """Serve `model_dir`'s weights from now on (a restarted actor reloads them too)."""
        self.weights = str(model_dir)
        ray.get([a.use.remote(self.weights) for a in self.actors])
