"""Tiny real models the tests save to disk (nothing comes from a hub)."""

import shutil
from pathlib import Path

from transformers import LlamaConfig, PreTrainedModel

from didray.worlds import toy

# A chat template for the toy tokenizer that reward models score through.
RM_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<s> user: "
               "{% else %} assistant: {% endif %}{{ m['content'] }}{% endfor %} </s>")


def save_toy_policy(out: Path, spec: toy.ToyWorldSpec) -> Path:
    """An untrained toy policy (its config carries the response mask), saved like a checkpoint."""
    tokenizer = toy.build_tokenizer()
    toy.build_model(spec, tokenizer).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_toy_policies(tmp_path_factory, spec: toy.ToyWorldSpec) -> tuple[Path, Path]:
    """Two untrained toy policies of `spec` with different weights (init seeds 0 and 1)."""
    return tuple(save_toy_policy(tmp_path_factory.mktemp(f"policy{seed}"),
                                 spec.model_copy(update={"seed": seed})) for seed in (0, 1))


def save_plain(model_class: type[PreTrainedModel], out: Path, tokenizer=None,
               **config) -> Path:
    """A randomly initialised 2-layer Llama of `model_class` over the toy tokenizer, without the
    toy mask (a plain hf model; head_dim 32, which vLLM's CPU attention supports)."""
    tokenizer = tokenizer or toy.build_tokenizer()
    model_class(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                            head_dim=32, max_position_embeddings=64,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, **config)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def hub_snapshot(cache: Path, repo: str, revision: str, commit: str, model: Path) -> Path:
    """`model` as the hub's cache under `cache` holds `repo` at `revision` after a download:
    offline, the hub client resolves the revision through refs/ to its snapshot folder."""
    folder = cache / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    shutil.copytree(model, folder / "snapshots" / commit)
    return folder / "snapshots" / commit
