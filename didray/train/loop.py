"""The DPO step and loop, with no Ray in sight: Ray Train's worker function wraps these."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from didray.core.dpo import dpo_loss
from didray.data.tensors import PairTensors
from didray.worlds.text import LogitsHook, response_logps


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


def make_optimizer(params, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def dpo_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: PairTensors,
    idx: Tensor,
    beta: float,
    loss_type: str,
    micro_batches: int = 1,
    hook: LogitsHook | None = None,
) -> dict[str, float]:
    """One optimizer step on pairs `idx`, accumulated over `micro_batches`; returns batch means."""
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    tokens = 0
    chunks = [c for c in idx.chunk(micro_batches) if len(c)]
    for chunk in chunks:
        # Chosen and rejected go through one forward pass: DDP expects one forward per backward.
        logps = response_logps(model, data.enc.rows(torch.cat([chunk, chunk + data.n])), hook)
        policy_c, policy_r = logps.chunk(2)  # (b,), (b,)
        losses, metrics = dpo_loss(policy_c, policy_r, data.ref_logps[chunk],
                                   data.ref_logps[chunk + data.n], beta, loss_type)
        (losses.mean() / len(chunks)).backward()
        for key, value in {"loss": losses.detach().mean(), **metrics}.items():
            totals[key] = totals.get(key, 0.0) + float(value) / len(chunks)
        tokens += int(data.enc.attention_mask[torch.cat([chunk, chunk + data.n])].sum())
    optimizer.step()
    return {**totals, "tokens": tokens}


def train_dpo(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: PairTensors,
    *,
    beta: float,
    loss_type: str,
    steps: int,
    batch_size: int,
    grad_accum: int,
    seed: int,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    hook: LogitsHook | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> None:
    """Run steps [start_step, steps); `on_step(step_done, metrics)` after each (for reporting)."""
    model.train()
    for step in range(start_step, steps):
        idx = batch_indices(data.n, batch_size, step, seed, rank, world_size)
        started = time.perf_counter()
        metrics = dpo_step(model, optimizer, data, idx, beta, loss_type, grad_accum, hook)
        metrics["tokens_per_s"] = metrics.pop("tokens") / (time.perf_counter() - started)
        if on_step is not None:
            on_step(step + 1, metrics)
