"""Loading a policy directory of either world: the model, its tokenizer and its logits hook."""

from __future__ import annotations

from pathlib import Path

from didray.worlds import hf, toy
from didray.worlds.text import LogitsHook


def load_policy(path: str | Path, dtype: str = "float32", gradient_checkpointing: bool = False
                ) -> tuple[object, object, LogitsHook | None]:
    """A saved policy (pi_ref or a checkpoint) and the hook giving the distribution it samples
    from: the toy world's response mask when its config carries one, none otherwise."""
    model, tokenizer = hf.load_policy(str(path), dtype, gradient_checkpointing)
    hook = toy.response_hook(model, tokenizer) if toy.response_space(model, tokenizer) else None
    return model, tokenizer, hook
