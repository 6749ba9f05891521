"""The toy policy's exact law of what a sampler returns, by enumeration: the reference the
sampling tests grade `score_ids` against.

A finished sample is one enumerated response (eos included). A sample cut at max_tokens is the
event "the response starts with these words": its probability is the sum over every
enumerated response that does, with no eos term for the prefix itself.
"""

import functools
import itertools

import torch
from transformers import AutoModelForCausalLM

from didray.sampling.completions import Completion
from didray.worlds import toy


@functools.cache
def _law(path: str, prompt: str) -> dict[str, float]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    words, longest = model.config.toy_response_words, model.config.toy_max_response_tokens
    responses = [" ".join(ws) for n in range(1, longest + 1)
                 for ws in itertools.product(words, repeat=n)]  # the saved policy's space
    logps = toy.response_logprobs(model, toy.build_tokenizer(), prompt, responses)
    return dict(zip(responses, logps.double().tolist(), strict=True))


def exact_logp(path, prompt: str, sample: Completion) -> float:
    """log p(sample | prompt) under the saved toy policy at `path`, exactly."""
    law = _law(str(path), prompt)
    if sample.finished:
        return law[sample.text]
    words = sample.text.split()
    starting = [lp for r, lp in law.items() if r.split()[: len(words)] == words]
    return float(torch.tensor(starting, dtype=torch.float64).logsumexp(0))
