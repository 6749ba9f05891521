"""The transformers backend of `Sampler`: plain `generate` and a forward pass for scoring.

A toy-world model (its config carries the response space) samples and scores under the
world's mask, so everything it returns is the toy policy's exact law; any other causal LM
samples and scores unmasked.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
)

from didray.sampling.completions import Completion, completion, prompt_seed
from didray.worlds.text import (
    Encoded,
    batched_response_logps,
    encode,
    encode_ids,
    prompt_ids,
)
from didray.worlds.toy.mask import ResponseLogitsProcessor, response_hook, response_space


class TransformersBackend:
    """Sampling and scoring with a transformers model held in this process."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32",
                 threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.dtype = getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype).eval()
        self.space = response_space(self.model, self.tokenizer)  # None outside the toy world

    def reload_weights(self, model_dir: str | Path) -> None:
        new = AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.dtype)
        self.model.load_state_dict(new.state_dict())

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        return self._logps(encode(self.tokenizer, prompts, completions))

    def score_ids(self, prompts: list[str], responses: list[list[int]]) -> list[float]:
        return self._logps(encode_ids(self.tokenizer, prompts, responses))

    def _logps(self, enc: Encoded) -> list[float]:
        hook = response_hook(self.model, self.tokenizer) if self.space else None
        return batched_response_logps(self.model, enc, hook).tolist()

    def generate(self, prompts: list[str], n: int, temperature: float = 1.0,
                 top_p: float = 1.0, max_tokens: int = 32,
                 seed: int = 0) -> list[list[Completion]]:
        # One generate call per prompt under its own seed: a prompt's draws must not depend
        # on the other prompts of the batch (or on how a pool shards them).
        return [self._generate_one(p, n, temperature, top_p, max_tokens, prompt_seed(seed, p))
                for p in prompts]

    @torch.no_grad()
    def _generate_one(self, prompt: str, n: int, temperature: float, top_p: float,
                      max_tokens: int, seed: int) -> list[Completion]:
        tok = self.tokenizer
        ids = torch.tensor([prompt_ids(tok, prompt)])  # (1, width)
        width = ids.shape[1]
        greedy = temperature == 0
        processors = LogitsProcessorList(
            [ResponseLogitsProcessor(self.space, width)] if self.space else [])
        sampling = {} if greedy else {"temperature": temperature, "top_p": top_p, "top_k": 0}
        config = GenerationConfig(do_sample=not greedy, **sampling, max_new_tokens=max_tokens,
                                  num_return_sequences=1 if greedy else n,
                                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                  output_scores=True, return_dict_in_generate=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      generation_config=config, logits_processor=processors)
        # Log-probs of the processed distributions, i.e. of what was actually sampled from.
        logps = self.model.compute_transition_scores(out.sequences, out.scores,
                                                     normalize_logits=True)  # (rows, new)
        rows = [completion(tok, seq[width:].tolist(), lp.tolist())
                for seq, lp in zip(out.sequences, logps, strict=True)]
        return rows * n if greedy else rows  # greedy decoding has one answer
