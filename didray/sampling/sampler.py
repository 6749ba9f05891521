"""The sampler: generate completions with their token log-probs, score given completions, and
load a trial's new weights. A plain class; pools wrap it with `ray.remote(Sampler)` where they
are built, so it runs the same in a test, a notebook or a Ray actor.

This is the transformers backend. A toy-world model (its config carries the response space)
samples and scores under the world's mask, so everything it returns is the toy policy's exact
law; any other causal LM samples and scores unmasked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
)

from didray.worlds import toy
from didray.worlds.text import batched_response_logps, encode, prompt_text


@dataclass(frozen=True)
class Completion:
    """One sampled response and the log-probs of its tokens (eos included) under the
    distribution it was drawn from (after temperature, top-p and a world's mask)."""

    text: str
    token_logprobs: tuple[float, ...]

    @property
    def logprob(self) -> float:
        return sum(self.token_logprobs)


class Sampler:
    """Sampling and scoring for one policy, reloadable with a trial's checkpoints."""

    def __init__(self, model_dir: str | Path, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.space = toy.response_space(self.model, self.tokenizer)  # None outside the toy world

    def reload_weights(self, model_dir: str | Path) -> None:
        """Load a checkpoint's weights into the running model (same architecture)."""
        new = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.load_state_dict(new.state_dict())

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        """Sequence log-prob of each completion (eos included) given its prompt."""
        hook = toy.response_hook(self.model, self.tokenizer) if self.space else None
        enc = encode(self.tokenizer, prompts, completions)
        return batched_response_logps(self.model, enc, hook).tolist()

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int, temperature: float = 1.0,
                 top_p: float = 1.0, max_tokens: int = 32, seed: int = 0) -> list[list[Completion]]:
        """n completions per prompt, reproducible in `seed`."""
        tok = self.tokenizer
        tok.padding_side = "left"  # one prompt length for the whole batch: the mask's step count
        batch = tok([prompt_text(tok, p) for p in prompts], return_tensors="pt", padding=True,
                    add_special_tokens=False)
        width = batch.input_ids.shape[1]
        processors = LogitsProcessorList(
            [toy.ResponseLogitsProcessor(self.space, width)] if self.space else [])
        config = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p,
                                  top_k=0, max_new_tokens=max_tokens, num_return_sequences=n,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                  output_scores=True, return_dict_in_generate=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.model.generate(**batch, generation_config=config,
                                      logits_processor=processors)
        # Log-probs of the processed distributions, i.e. of what was actually sampled from.
        logps = self.model.compute_transition_scores(out.sequences, out.scores,
                                                     normalize_logits=True)  # (B*n, new)
        rows = [self._completion(seq[width:], lp) for seq, lp in zip(out.sequences, logps,
                                                                     strict=True)]
        return [rows[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _completion(self, tokens: torch.Tensor, logps: torch.Tensor) -> Completion:
        ids = tokens.tolist()
        end = ids.index(self.tokenizer.eos_token_id) + 1 if self.tokenizer.eos_token_id in ids \
            else len(ids)
        text = self.tokenizer.decode(ids[: end], skip_special_tokens=True).strip()
        return Completion(text, tuple(float(x) for x in logps[:end]))
