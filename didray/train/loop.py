"""The DPO step and loop, with no Ray in sight: Ray Train's worker function wraps these."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from didray.core.dpo import PreferenceLoss, population_loss
from didray.data.tensors import PairTensors
from didray.worlds.text import LogitsHook, batch_rows, response_logps, row_lengths
from didray.worlds.toy.enumeration import Enumeration


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world_size: int = 1) -> Tensor:
    """This rank's pair indices for global `step`.

    A pure function of (step, seed) rather than an iterator's state, so a run resumed from a
    checkpoint at step k sees exactly the batches the uninterrupted run would have seen.
    """
    start = step * batch_size
    epoch, offset = divmod(start, n)
    perms = [torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + e))
             for e in (epoch, epoch + 1)]
    order = torch.cat(perms)  # (2n,) covers a batch that crosses an epoch end
    batch = order[offset : offset + batch_size]  # needs batch_size <= n (checked in prepare)
    return batch[rank::world_size]  # (batch_size / world_size,)


@dataclass(frozen=True)
class Batches:
    """The pairs each optimizer step takes on this rank (`batch_indices`), and the micro-batches
    it accumulates them in."""

    size: int  # over all ranks
    seed: int
    micro_batches: int = 1
    rank: int = 0
    world_size: int = 1

    def at(self, n: int, step: int) -> Tensor:
        return batch_indices(n, self.size, step, self.seed, self.rank, self.world_size)


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    # One fused kernel instead of a loop over parameter tensors; torch has it on CPU and CUDA
    # in every version this project admits (>= 2.4).
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


def lr_factor(step: int, steps: int, schedule: str, warmup_steps: int) -> float:
    """The multiplier of the base learning rate for optimizer step `step` (0-based), as
    transformers' get_{constant,linear,cosine}_schedule_with_warmup: linear warmup from 0
    over `warmup_steps`, then constant, linear decay to 0 at `steps`, or half a cosine to 0
    (docs/design.md §3.4). A pure function of the step, like `batch_indices`: a resumed run
    needs no scheduler state."""
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_schedule(lr: float, steps: int, schedule: str,
                warmup_steps: int) -> Callable[[int], float] | None:
    """Each step's learning rate; None when it is `lr` throughout, so that the default leaves
    the optimizer's rate untouched (results from before schedules existed stay bit-equal)."""
    if schedule == "constant" and warmup_steps == 0:
        return None
    return lambda step: lr * lr_factor(step, steps, schedule, warmup_steps)


def as_floats(metrics: dict[str, Tensor | float]) -> dict[str, float]:
    """`dpo_step`'s metrics as numbers, at report time: reading a tensor waits for the device."""
    return {key: float(value) for key, value in metrics.items()}


def dpo_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: PairTensors,
    lengths: Tensor,
    idx: Tensor,
    loss: PreferenceLoss,
    micro_batches: int = 1,
    hook: LogitsHook | None = None,
    *,
    max_grad_norm: float | None = None,
) -> dict[str, Tensor | int]:
    """One optimizer step on pairs `idx` (host), accumulated over `micro_batches`, each cut to
    its longest row (`lengths` from `row_lengths`), its gradient clipped to `max_grad_norm`
    (None: not clipped). Returns the batch means as 0-d tensors, so the step never waits for
    the device (`as_floats` reads them), and the token count."""
    optimizer.zero_grad(set_to_none=True)
    parts: list[dict[str, Tensor]] = []  # each micro-batch's means
    chunks = [c for c in idx.chunk(micro_batches) if len(c)]
    for chunk in chunks:
        rows = torch.cat([chunk, chunk + data.n])  # (2b,) chosen rows, then rejected
        # Chosen and rejected go through one forward pass: DDP expects one forward per backward.
        batch = batch_rows(data.enc, rows, lengths)
        logps = response_logps(model, batch, hook)  # (2b,)
        ref = data.ref_logps[rows.to(logps.device, non_blocking=True)]  # (2b,)
        sizes = batch.response_mask.sum(dim=-1).chunk(2)  # response tokens: simpo's lengths
        losses, metrics = loss(*logps.chunk(2), *ref.chunk(2), *sizes)
        mean = losses.mean()
        (mean / len(chunks) if len(chunks) > 1 else mean).backward()
        parts.append({"loss": mean.detach(), **metrics})
    if max_grad_norm is not None:  # after backward: DDP has averaged the gradients by then
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return {**batch_means(parts), "tokens": int(lengths[torch.cat([idx, idx + data.n])].sum())}


def batch_means(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The micro-batches' means averaged; one micro-batch's as they are, since dividing by 1
    and adding to 0 change no value but cost a dozen tensor ops a step (docs/performance.md)."""
    if len(parts) == 1:
        return parts[0]
    return {key: sum(part[key] / len(parts) for part in parts) for key in parts[0]}


@dataclass(frozen=True)
class Population:
    """The population objective's fixed parts (docs/design.md §1.11): the training prompts'
    enumeration, pi_ref's log-probs on them and the regime's exact pair law."""

    enumeration: Enumeration  # training prompts only
    tokenizer: PreTrainedTokenizerBase
    ref: Tensor  # (P, R) on the model's device
    law: Tensor  # (P, R, R) P(i chosen, j rejected), on the model's device


def population_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    population: Population, loss: PreferenceLoss,
                    max_grad_norm: float | None = None) -> dict[str, Tensor]:
    """One optimizer step on the expected loss over every pair of every training prompt: the
    policy's log-prob table is enumerated with gradients on, so no pair is sampled."""
    optimizer.zero_grad(set_to_none=True)
    table = population.enumeration.table(model, population.tokenizer)  # (P, R)
    value = population_loss(table, population.ref, population.law, loss)  # ()
    value.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return {"loss": value.detach()}


def train_dpo(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: PairTensors,
    loss: PreferenceLoss,
    batches: Batches,
    steps: range,
    *,
    hook: LogitsHook | None = None,
    on_step: Callable[[int, dict[str, Tensor | float]], None] | None = None,
    lr_at: Callable[[int], float] | None = None,
    max_grad_norm: float | None = None,
    population: Population | None = None,
) -> None:
    """Run `steps` (a resumed run starts past 0); `on_step(step_done, metrics)` after each
    (for reporting). `lr_at(step)` sets the learning rate of each step (None: the optimizer's
    stays); `max_grad_norm` is dpo_step's. With `population`, every step is a
    `population_step` and `data` is not read.

    `metrics` are 0-d device tensors (convert with `as_floats` on the steps that report) and,
    for sampled pairs, `tokens_per_s`, a float: the host's pace, which is the device's once
    its queue is full.
    """
    model.train()
    lengths = row_lengths(data.enc)
    for step in steps:
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
        if population is not None:
            metrics = population_step(model, optimizer, population, loss, max_grad_norm)
        else:
            started = time.perf_counter()
            metrics = dpo_step(model, optimizer, data, lengths, batches.at(data.n, step), loss,
                               batches.micro_batches, hook, max_grad_norm=max_grad_norm)
            metrics["tokens_per_s"] = metrics.pop("tokens") / (time.perf_counter() - started)
        if on_step is not None:
            on_step(step + 1, metrics)
