"""A regime's tokenised pairs with their reference log-probs: the only data a trial trains on.

Computed once per (model, data, max lengths) in prepare and read by every Train worker, so this
module imports only torch and safetensors (a worker process never loads `datasets`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from didray.files import sealed_write
from didray.worlds.text import Encoded


@dataclass(frozen=True)
class PairTensors:
    """A tokenised preference dataset: rows [0, n) hold chosen, rows [n, 2n) the rejected."""

    enc: Encoded  # (2n, T)
    ref_logps: Tensor  # (2n,) reference log-probs of every row, from the shared cache

    @property
    def n(self) -> int:
        return self.ref_logps.shape[0] // 2

    def to(self, device: torch.device | str) -> PairTensors:
        return PairTensors(self.enc.to(device), self.ref_logps.to(device))


def save_pair_tensors(data: PairTensors, path: Path) -> None:
    tensors = {"input_ids": data.enc.input_ids, "attention_mask": data.enc.attention_mask,
               "response_mask": data.enc.response_mask, "ref_logps": data.ref_logps}
    sealed_write(path, lambda tmp: save_file(tensors, tmp))


def load_pair_tensors(path: Path) -> PairTensors:
    t = load_file(path)
    return PairTensors(Encoded(t["input_ids"], t["attention_mask"], t["response_mask"]),
                       t["ref_logps"])
