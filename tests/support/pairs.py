"""Preference pairs on an untrained toy policy, for the trainer's tests."""

import torch
import torch.nn.functional as F

from didray.worlds import toy
from didray.worlds.text import Encoded, encode


def toy_pairs(extra_padding: int = 0):
    """An untrained toy policy, its response hook and 4 pairs of varied length, right-padded
    `extra_padding` columns past the longest row."""
    torch.manual_seed(0)
    spec = toy.ToyWorldSpec(n_open_prompts=2, n_fact_prompts=2, response_alphabet=6,
                            max_response_tokens=2)
    world, tokenizer = toy.build_world(spec), toy.build_tokenizer()
    model = toy.build_model(spec, tokenizer)
    prompts = [p.text for p in world.prompts]
    chosen, rejected = ["red blue", "cat", "one", "red"], ["dog dog", "red red", "cat", "two"]
    enc = encode(tokenizer, prompts * 2, chosen + rejected)
    enc = Encoded(F.pad(enc.input_ids, (0, extra_padding), value=tokenizer.pad_token_id),
                  F.pad(enc.attention_mask, (0, extra_padding)),
                  F.pad(enc.response_mask, (0, extra_padding)))
    return model, toy.response_hook(model, tokenizer), enc
