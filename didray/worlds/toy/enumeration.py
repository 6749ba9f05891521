"""Exact enumeration: log pi(y | x) of every response of every prompt (docs/design.md §2.2).

The responses of a prompt form a tree of content-word prefixes, A^d of them at depth d. The
model runs once over each prompt, then one token per prefix, each on its parent's key-value
cache: A + A^2 + ... + A^(L-1) tokens a prompt, where scoring every response on its own runs
A^L full sequences. A k-word response's log-prob is its words' log-probs along its path plus
log p(</s> | its k words). Depth L needs no pass: the mask leaves only `</s>` there, so its
log-prob is 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from didray.worlds.text import prompt_ids
from didray.worlds.toy.language import ToyWorld
from didray.worlds.toy.mask import ResponseSpace

ENUMERATION = "tree-v1"  # how the enumeration computes: part of the enumeration cache key

# Sequences in one forward pass (the default of `max_rows`): bounds the key-value caches of a
# pass, which grow by A with every depth.
MAX_ROWS = 8192


@dataclass(frozen=True)
class Enumeration:
    """A world's prompts as token ids, tokenised once: grouped by length, so every pass is
    unpadded. `logps` then scores any policy of that world."""

    groups: tuple[tuple[Tensor, Tensor], ...]  # (rows in all_prompts (g,), prompt ids (g, T))
    n_prompts: int

    @classmethod
    def of(cls, world: ToyWorld, tokenizer: PreTrainedTokenizerBase,
           training_only: bool = False) -> Enumeration:
        """All prompts (`world.all_prompts`), or the training prompts alone (`world.prompts`,
        which come first): the population objective needs only those (§1.11)."""
        by_length = defaultdict(list)
        prompts = world.prompts if training_only else world.all_prompts
        for row, prompt in enumerate(prompts):
            ids = prompt_ids(tokenizer, prompt.text)
            by_length[len(ids)].append((row, ids))
        groups = tuple((torch.tensor([row for row, _ in group]),
                        torch.tensor([ids for _, ids in group]))
                       for group in by_length.values())
        return cls(groups, len(prompts))

    @torch.no_grad()
    def logps(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              max_rows: int = MAX_ROWS) -> Tensor:
        """(P, R) log pi(y | x) of the masked policy, rows in `world.all_prompts` order,
        responses in `enumerate_responses` order. A pass after the prompts' own extends at
        most max_rows // A prefixes (at least one) by its A words."""
        return self.table(model, tokenizer, max_rows).cpu()

    def table(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              max_rows: int = MAX_ROWS) -> Tensor:
        """`logps` on the model's device, differentiable in the model's parameters when
        gradients are on: the population objective trains through it (§1.11)."""
        space = ResponseSpace.from_model(model, tokenizer)
        tables = [None] * self.n_prompts
        for rows, ids in self.groups:
            out = model(input_ids=ids.to(model.device), use_cache=True)
            laws: list[list[Tensor]] = [[] for _ in range(space.max_tokens)]
            _descend(model, space, out.logits[:, -1], out.past_key_values, laws, max_rows)
            for row, table in zip(rows.tolist(), _responses(space, laws), strict=True):
                tables[row] = table
        return torch.stack(tables)


def _descend(model: PreTrainedModel, space: ResponseSpace, logits: Tensor,
             cache: DynamicCache, laws: list[list[Tensor]], max_rows: int,
             depth: int = 0) -> None:
    """Append to laws[depth:] the masked next-token laws after these depth-word prefixes
    (logits (n, V), their cache) and after all their descendants below depth L, in prefix
    order: extending the rows in order, chunk by chunk, keeps every depth's rows in order."""
    steps = torch.full((len(logits),), depth, device=logits.device)
    laws[depth].append(space.mask_logits(logits.float(), steps).log_softmax(-1))  # (n, V)
    if depth + 1 == space.max_tokens:
        return
    words = torch.tensor(space.content_ids, device=logits.device)  # (A,)
    chunk = max(1, max_rows // len(words))
    for at in range(0, len(logits), chunk):
        rows = slice(at, at + chunk)
        # Child i * A + j is parent i followed by word j: product order, as enumerated.
        grown = DynamicCache([(keys[rows].repeat_interleave(len(words), 0),
                               values[rows].repeat_interleave(len(words), 0))
                              for keys, values, *_ in cache])
        n = len(logits[rows])
        out = model(input_ids=words.repeat(n).unsqueeze(1), past_key_values=grown,
                    use_cache=True)
        _descend(model, space, out.logits[:, -1], out.past_key_values, laws, max_rows,
                 depth + 1)


def _responses(space: ResponseSpace, laws: list[list[Tensor]]) -> Tensor:
    """(g, R) log-probs of every response from the laws of every depth below L."""
    depth_laws = [torch.cat(law) for law in laws]  # depth d: (g * A^d, V)
    g, words = len(depth_laws[0]), list(space.content_ids)
    path = torch.zeros(g, 1, device=depth_laws[0].device)  # log pi(empty prefix)
    tables = []
    for d in range(space.max_tokens):
        step = depth_laws[d][:, words].view(g, -1, len(words))  # (g, A^d, A)
        path = (path.unsqueeze(-1) + step).view(g, -1)  # (g, A^(d+1)): (d+1)-word prefixes
        is_last = d + 1 == space.max_tokens  # only </s> after L words: log-prob 0
        stop = 0.0 if is_last else depth_laws[d + 1][:, space.eos_id].view(g, -1)
        tables.append(path + stop)
    return torch.cat(tables, -1)


def enumerate_logps(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, world: ToyWorld
) -> Tensor:
    """log pi(y | x) of every enumerated response of every prompt: (P, R), rows in
    `world.all_prompts` order (training, then held-out). Tokenises the prompts: to score
    several policies of one world, build its `Enumeration` once."""
    return Enumeration.of(world, tokenizer).logps(model, tokenizer)
