"""Tokenising (prompt, response) text and scoring responses: shared by every text world.

The toy world's SFT and enumeration, the reference cache and the DPO trainer all score through
`response_logps`, so a sequence gets one log-prob wherever it is computed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from didray.core.logprobs import sequence_logps
from didray.display import Progress

# Maps a batch's logits (B, T, V) and response mask (B, T) to the distribution the world's
# policy actually samples from: the toy world restricts it to its response space; hf: none.
LogitsHook = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Encoded:
    """Right-padded token tensors for a batch of prompt + response sequences."""

    input_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    response_mask: Tensor  # (B, T) 1 on response tokens (incl. the final eos), label positions

    def rows(self, index: slice | Tensor) -> Encoded:
        return Encoded(self.input_ids[index], self.attention_mask[index],
                       self.response_mask[index])

    def to(self, device: torch.device | str) -> Encoded:
        return Encoded(self.input_ids.to(device), self.attention_mask.to(device),
                       self.response_mask.to(device))


# A multi-turn prompt travels as one string, as every prompt does (cache keys, parquet columns
# and sampler calls take strings): this mark, then its messages as JSON. The ASCII record
# separator begins no prompt a person writes.
CONVERSATION = "\x1e"


def conversation_prompt(messages: list[dict[str, str]]) -> str:
    """The prompt string of a conversation of {role, content} messages, ending with the user's."""
    kept = [{"role": m["role"], "content": m["content"]} for m in messages]
    return CONVERSATION + json.dumps(kept, ensure_ascii=False)


def prompt_messages(prompt: str) -> list[dict[str, str]]:
    """The chat messages of a prompt: its conversation, or one user message."""
    if prompt.startswith(CONVERSATION):
        return json.loads(prompt[len(CONVERSATION):])
    return [{"role": "user", "content": prompt}]


def prompt_text(tokenizer, prompt: str) -> str:
    """The chat-templated prompt the policy sees (generation prompt included)."""
    return tokenizer.apply_chat_template(prompt_messages(prompt), add_generation_prompt=True,
                                         tokenize=False)


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The chat-templated prompt's token ids, as `encode` and the samplers tokenise it."""
    return tokenizer.encode(prompt_text(tokenizer, prompt), add_special_tokens=False)


def encode_ids(tokenizer, prompts: Sequence[str], responses: Sequence[Sequence[int]]) -> Encoded:
    """Like `encode`, with each response given as the token ids to score, taken as they are
    (no eos appended, no decode/re-encode): a sampled response scores exactly as drawn."""
    heads = [prompt_ids(tokenizer, p) for p in prompts]
    rows = [h + list(r) for h, r in zip(heads, responses, strict=True)]
    return Encoded(_padded(rows, tokenizer.pad_token_id), _padded([[1] * len(r) for r in rows]),
                   _padded([[0] * len(h) + [1] * len(r)
                            for h, r in zip(heads, responses, strict=True)]))


def _padded(rows: list[list[int]], value: int = 0) -> Tensor:
    """Right-padded (B, T) long tensor of the rows."""
    return pad_sequence([torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True,
                        padding_value=value)


def encode(
    tokenizer, prompts: Sequence[str], responses: Sequence[str],
    max_prompt: int | None = None, max_response: int | None = None,
) -> Encoded:
    """Tokenise; prompts keep their last `max_prompt` tokens, responses their first
    `max_response` (eos included)."""
    rows, masks = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        p = tokenizer.encode(prompt_text(tokenizer, prompt), add_special_tokens=False)
        r = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
        p = p[-max_prompt:] if max_prompt else p
        r = r[:max_response] if max_response else r
        rows.append(p + r)
        masks.append([0] * len(p) + [1] * len(r))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
    attn = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    resp = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        resp[i, : len(row)] = torch.tensor(mask)
    return Encoded(ids, attn, resp)


def response_logps(model, enc: Encoded, hook: LogitsHook | None = None) -> Tensor:
    """Summed log-probs of each row's response tokens under `model` (B,), with gradients."""
    logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits.float()
    if hook is not None:
        logits = hook(logits, enc.response_mask)  # (B, T, V)
    summed, _ = sequence_logps(logits, enc.input_ids, enc.response_mask)  # (B,)
    return summed


def row_lengths(enc: Encoded) -> Tensor:
    """Each row's token count (N,), on the host: read from the device once, so that cutting a
    batch to its longest row never waits for the device."""
    return enc.attention_mask.sum(dim=-1).cpu()


def batch_rows(enc: Encoded, rows: Tensor, lengths: Tensor) -> Encoded:
    """Rows `rows` (host) of `enc`, cut to the longest of them. Right padding past a row's end
    changes none of its log-probs (causal attention, padding masked) and only costs compute."""
    width = int(lengths[rows].max())
    index = rows.to(enc.input_ids.device, non_blocking=True)  # no wait for the device's queue
    return Encoded(enc.input_ids[index, :width], enc.attention_mask[index, :width],
                   enc.response_mask[index, :width])


@torch.no_grad()
def batched_response_logps(
    model, enc: Encoded, hook: LogitsHook | None = None, batch_size: int = 256,
    progress: Progress | None = None,
) -> Tensor:
    """`response_logps` in chunks without gradients: for caches and evaluation (N,), in
    `enc`'s row order. The chunks take the rows longest first, each cut to its longest row: a
    dataset padded to its longest sequence wastes no compute on the shorter ones (the SmolLM2
    pair metrics: 96 rows of 52 to 107 tokens). `progress` counts the sequences scored."""
    lengths = row_lengths(enc)
    order = torch.argsort(lengths, descending=True, stable=True)
    chunks = []
    for rows in order.split(batch_size):
        chunks.append(response_logps(model, batch_rows(enc, rows, lengths), hook))
        if progress is not None:
            progress.update(len(chunks[-1]))
    return torch.cat(chunks)[torch.argsort(order).to(chunks[0].device)]
