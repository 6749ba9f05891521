"""The sweep's scorers (`eval.scorer`, `data.scorer`) in Ray actors: `ray.remote(ScorerActor)`
is applied here, where the actors are made; the scoring itself is didray/eval/scorers.py.

One actor per scorer and sweep stage loads the scorer model, with its settings' CPUs, GPUs and
dtype, so neither the driver nor a trial function (which holds no resources) ever loads it.
Prepare's actors (pair scores with `data.scorer` where given, else `eval.scorer`; pi_ref's
greedy scores with `eval.scorer`) start on first use, so a fully cached prepare starts none,
and are killed with the sampler pool, before the reference log-probs take the CPUs. The
trials' actor (`eval.scorer`) is started by the driver before Tune runs, named after the sweep,
so every trial's evaluation finds the same one, and killed when Tune returns (owned by the
driver, it dies with it too).

Ray restarts a dead actor (the model reloaded from the same settings) and reruns the call it
was serving: scoring is deterministic, so a rerun gives the same scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import torch

from didray.config.schema import Scorer
from didray.config.trial import threads_for
from didray.eval.scorers import make_scorer
from didray.files import read_json

# Ray: a dead scorer actor is replaced, and its calls rerun, this many times.
RESTARTS = 3


class ScorerActor:
    """The scorer model, loaded once in the actor's process."""

    def __init__(self, settings: Scorer, references: dict[str, str], threads: int) -> None:
        torch.set_num_threads(threads)
        self.scorer = make_scorer(settings.kind, settings.path, references, settings.dtype,
                                  settings.revision)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.scorer(prompts, responses)


def start_scorer(settings: Scorer, references: dict[str, str], name: str | None = None):
    """A scorer actor holding `settings`' resources (its model loads in the background)."""
    remote = ray.remote(ScorerActor).options(  # Ray: one process, the scorer's resources
        num_cpus=settings.cpus, num_gpus=settings.gpus, name=name,
        max_restarts=RESTARTS, max_task_retries=RESTARTS)
    return remote.remote(settings, references, threads_for(settings.cpus))


def score(actor, prompts: list[str], responses: list[str]) -> list[float]:
    return ray.get(actor.score.remote(prompts, responses))  # Ray: wait for the scores


class LazyScorer:
    """Prepare's scorer actor, started on first call; `close` releases it."""

    def __init__(self, settings: Scorer, references: dict[str, str],
                 progress: Callable[[str], None]) -> None:
        self.settings, self.references, self.progress = settings, references, progress
        self.actor = None

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        if self.actor is None:
            s = self.settings
            self.progress(f"scorer: starting the {s.kind} actor ({s.cpus:g} CPU, {s.gpus:g} "
                          f"GPU, {s.dtype})")
            self.actor = start_scorer(s, self.references)
        return score(self.actor, prompts, responses)

    def close(self) -> None:
        if self.actor is not None:
            ray.kill(self.actor)  # Ray: frees the actor's resources at once, no restart
            self.actor = None


def scorer_name(sweep: str) -> str:
    return f"didray-scorer-{sweep}"


@contextmanager
def trials_scorer(sweep: str, settings: Scorer | None, eval_file: Path | None) -> Iterator[None]:
    """The trials' shared scorer actor while the block runs (hf; the toy world has none). Its
    embedding references are those pi_ref's evaluation recorded."""
    if settings is None or eval_file is None:
        yield
        return
    actor = start_scorer(settings, read_json(eval_file)["references"], scorer_name(sweep))
    try:
        yield
    finally:
        ray.kill(actor)


def shared_score(sweep: str, prompts: list[str], responses: list[str]) -> list[float]:
    """Scores from the driver's `trials_scorer` of this sweep."""
    return score(ray.get_actor(scorer_name(sweep)), prompts, responses)  # Ray: by its name
