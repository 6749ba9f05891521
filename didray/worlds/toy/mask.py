"""The response mask that defines the toy world's policy.

At response step 0 only content words are allowed, at steps 1..L-1 content words and `</s>`, at
step L only `</s>`. `ResponseSpace.mask_logits` is the one function that applies this mask;
scoring (`response_logprobs`), sampling and the `generate` logits processor all go through it,
and a trainer computing DPO log-probs must too (via `masked_response_logits`), otherwise
enumerated probabilities would not sum to 1.

A saved policy carries its response space in its config, so this module needs nothing else of
the world: the sampler backends import only it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase

from didray.worlds.text import LogitsHook


@dataclass(frozen=True)
class ResponseSpace:
    """Which token may appear at each response step; defines the toy world's policy."""

    content_ids: tuple[int, ...]
    eos_id: int
    vocab_size: int
    max_tokens: int  # L

    @classmethod
    def from_model(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
    ) -> ResponseSpace:
        words = model.config.toy_response_words
        ids = tuple(tokenizer.convert_tokens_to_ids(w) for w in words)
        big_l = model.config.toy_max_response_tokens
        return cls(ids, tokenizer.eos_token_id, model.config.vocab_size, big_l)

    def allowed(self, device: torch.device | str = "cpu") -> Tensor:
        """(L+1, V) bool: row s lists the tokens allowed at response step s."""
        table = torch.zeros(self.max_tokens + 1, self.vocab_size, dtype=torch.bool, device=device)
        table[: self.max_tokens, list(self.content_ids)] = True  # content at steps 0..L-1
        table[1:, self.eos_id] = True  # </s> at steps 1..L (never an empty response)
        return table

    def mask_logits(self, logits: Tensor, steps: Tensor) -> Tensor:
        """Disallowed tokens get the dtype's minimum where steps >= 0; other rows unchanged.

        logits (..., V); steps (...) long, the response step each row predicts, -1 for rows
        outside the response (prompt, last token, padding). A finite minimum rather than -inf
        keeps 0 * logp = 0 at masked-out positions of a loss.
        """
        table = self.allowed(logits.device)  # (L+1, V)
        in_resp = steps >= 0  # (...)
        allowed = table[steps.clamp(0, self.max_tokens)] | ~in_resp.unsqueeze(-1)  # (..., V)
        return logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)


def response_steps(loss_mask: Tensor) -> Tensor:
    """(B, T) loss_mask over label positions -> (B, T) step each *logit* position predicts.

    logits[:, i] predicts labels[:, i+1], so the step at logit position i is the index of
    response token i+1 within its response, or -1 if position i+1 is not a response token.
    """
    mask = loss_mask.long()  # (B, T)
    shifted = torch.zeros_like(mask)  # (B, T)
    shifted[:, :-1] = mask[:, 1:]
    steps = shifted.cumsum(dim=1) - 1  # (B, T)
    return torch.where(shifted.bool(), steps, torch.full_like(steps, -1))


def masked_response_logits(logits: Tensor, loss_mask: Tensor, space: ResponseSpace) -> Tensor:
    """Apply the response mask to a training batch: logits (B, T, V), loss_mask (B, T).

    Use this before any log-prob computation on toy-world policies (SFT, DPO, reference).
    """
    return space.mask_logits(logits, response_steps(loss_mask))


class ResponseLogitsProcessor(LogitsProcessor):
    """`generate` logits processor applying the same mask; all rows share one prompt length."""

    def __init__(self, space: ResponseSpace, prompt_len: int) -> None:
        self.space = space
        self.prompt_len = prompt_len

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        step = input_ids.shape[1] - self.prompt_len
        steps = torch.full(scores.shape[:-1], step, dtype=torch.long, device=scores.device)
        return self.space.mask_logits(scores, steps)


def response_space(model: PreTrainedModel,
                   tokenizer: PreTrainedTokenizerBase) -> ResponseSpace | None:
    """The toy response space a saved policy carries in its config; None for other models."""
    if getattr(model.config, "toy_response_words", None) is None:
        return None
    return ResponseSpace.from_model(model, tokenizer)


def response_hook(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  temperature: float = 1.0) -> LogitsHook:
    """The masked policy as a `didray.worlds.text` logits hook (temperature before the mask)."""
    space = ResponseSpace.from_model(model, tokenizer)
    return lambda logits, mask: masked_response_logits(logits / temperature, mask, space)

