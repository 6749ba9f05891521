"""The toy language world: a tiny Llama fitted to a synthetic task language (docs/design.md §2.2).

A prompt's whole response space is small enough to enumerate, so sequence probabilities, DIDs
and DID entropies are computed exactly. Its modules, by lifecycle:

- `language`: the task language (prompts, rewards, the enumerated response space);
- `model`: the tokenizer and a freshly initialised tiny Llama;
- `mask`: the response mask that defines the world's policy (all a sampler needs);
- `reference`: pi_ref, SFT'd on a teacher's samples and cached, and scoring responses;
- `enumeration`: the log-prob of every response of every prompt, for exact evaluation.

`toy.X` imports X's module on first use, so a sampler that imports only `toy.mask` does not
load the rest of the world.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "didray.config.schema": ("ToyWorldSpec",),
    ".language": ("ToyPrompt", "ToyWorld", "build_world",
                  "enumerate_responses", "response_space_size"),
    ".model": ("CHAT_TEMPLATE", "PAD", "build_model", "build_tokenizer"),
    ".mask": ("ResponseLogitsProcessor", "ResponseSpace", "masked_response_logits",
              "response_hook", "response_space"),
    ".reference": ("fit_reference", "load_world", "read_world", "reference_problem",
                   "response_logprobs"),
    ".enumeration": ("ENUMERATION", "Enumeration", "enumerate_logps"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> object:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name], __name__), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
