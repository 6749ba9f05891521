"""The toy world's tokenizer and a freshly initialised tiny Llama (no training here)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from didray.config.schema import ToyWorldSpec
from didray.worlds.toy.language import (
    CATEGORIES,
    CONTENT_POOL,
    COUNT_WORDS,
    ENTITIES,
    FACT_RELATIONS,
    OPEN_VERBS,
)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
USER, ASSISTANT = "user:", "assistant:"

CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "<s> user: {{ message['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} assistant:{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over every word the task language can use (any spec)."""
    words = [PAD, BOS, EOS, UNK, USER, ASSISTANT, "of", *OPEN_VERBS, *COUNT_WORDS]
    words += [*CATEGORIES, *FACT_RELATIONS, *ENTITIES, *CONTENT_POOL]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    core = Tokenizer(WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="right",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(spec: ToyWorldSpec, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama (float32), seeded by `spec.seed`.

    The response space is stored in the config (`toy_response_words`, `toy_max_response_tokens`)
    so any saved policy carries the mask that defines it.
    """
    world_alphabet = list(CONTENT_POOL[: spec.response_alphabet])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        toy_response_words=world_alphabet,
        toy_max_response_tokens=spec.max_response_tokens,
    )
    # fork_rng: seed the init without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()

