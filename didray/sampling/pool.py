"""A pool of sampler actors: `ray.remote(Sampler)` is applied here, where the actors are made.

Prompts are split over the actors in contiguous shards of at least MIN_ROWS rows and the
answers put back in order. Each prompt's random stream is seeded from (seed, prompt text)
inside the sampler, so the draws do not depend on how many actors there are.

Ray restarts an actor whose process dies and reruns the calls it was serving: each call is
idempotent (the draws are seeded per prompt, scores are deterministic), and each names the
weights it expects, since a restarted actor starts on the weights it was made with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
# Rows per call at least: an engine draws many sequences in one batch far faster than a few in
# each of several serial calls (issue 23, SmolLM2 on vLLM: 4 prompts split into 4 one-prompt
# calls for the display's sake). Fewer rows go in one call, and the display counts that call.
MIN_ROWS = 8


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


def call_shards(n_items: int, n_actors: int, shown: bool) -> list[slice]:
    """The calls `n_items` rows are split into: one per actor, SHOWN_SHARDS per actor where
    progress is shown, but never a call of fewer than MIN_ROWS rows (unless all are fewer)."""
    wanted = n_actors * (SHOWN_SHARDS if shown else 1)
    return shards(n_items, max(1, min(wanted, n_items // MIN_ROWS)))


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
                 dtype: str = "float32", name: str | None = None, cpus: float | None = None
                 ) -> None:
        """`name`: the actors' Ray name (for one actor); `cpus`: the CPUs each reserves, if not
        `settings.cpus_per_actor` (its threads stay as many as that)."""
        self.backend = resolve_backend(settings.backend)
        threads = threads_for(settings.cpus_per_actor)
        remote = ray.remote(PooledSampler).options(  # Ray: one process per actor
            num_cpus=settings.cpus_per_actor if cpus is None else cpus,
            num_gpus=settings.gpus_per_actor, name=name,
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
        name counts the rows done, call by call (`call_shards`)."""
        if not columns[0]:
            return []
        parts = call_shards(len(columns[0]), len(self.actors), shown is not None)
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


def sampler_name(sweep: str) -> str:
    return f"didray-sampler-{sweep}"


class SharedSampler(SamplerPool):
    """A trial's handle on its sweep's `trials_sampler` actor, found by name; closing the
    handle leaves the actor to the driver that owns it."""

    def __init__(self, sweep: str, model_dir: str | Path) -> None:
        self.weights = str(model_dir)
        self.actors = [ray.get_actor(sampler_name(sweep))]  # Ray: the driver's named actor

    def close(self) -> None:
        self.actors = []


@contextmanager
def trials_sampler(sweep: str, model_dir: Path, settings: SamplerSettings,
                   dtype: str) -> Iterator[None]:
    """One sampler actor on pi_ref, shared by the trials that evaluate through `SharedSampler`
    while the block runs: each trial reloads its weights into it, instead of starting an
    engine. It reserves no CPU: it works only for a trial waiting on it, whose bundle holds
    the CPUs (`didray.sweep.trial.trial_resources`, docs/design.md §3)."""
    pool = SamplerPool(model_dir, settings.model_copy(update={"actors": 1}), dtype,
                       name=sampler_name(sweep), cpus=0)
    with pool:
        yield
