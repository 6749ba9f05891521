"""Torch's intra-op thread count for one block of work, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on `n` torch threads. The process's own setting comes back after it: the
    driver keeps its threads for what follows, and a reused Ray worker for its next task."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
