"""The hf world's data: preference datasets and QA sets, from the hub or local files.

Datasets follow TRL's formats: standard (strings) or conversational (lists of chat messages).
Every row comes back as plain strings, and a bad row is reported by source, row and column.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import datasets

from didray.errors import BadInput
from didray.worlds.hf import resolve_path

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "reference")
# Which message a conversational column contributes: the question, or the answer.
_ROLE = {"prompt": "user", "chosen": "assistant", "rejected": "assistant",
         "reference": "assistant"}



@dataclass(frozen=True)
class Pin:
    """Which version of a multi-config or hub dataset: its config (e.g. MMLU's `all`) and a
    hub revision (a tag or commit, so the cache keys that include it change with it)."""

    config: str | None = None
    revision: str | None = None


def load_rows(source: str, split: str = "train", limit: int | None = None,
              pin: Pin = Pin()) -> list[dict]:
    """The raw rows of a dataset: a hub name, a .jsonl/.json/.parquet file, a `save_to_disk`
    directory or a data directory (with configs declared in its README, if any)."""
    path = resolve_path(source)
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise BadInput(f"{source}: the file is empty")
    try:
        data = _load_dataset(path, split, pin)
    except (datasets.exceptions.DatasetsError, OSError, ValueError) as err:
        # A generation error's own message is generic; the parse error is its cause.
        detail = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
        raise BadInput(f"{source}: cannot load split {split!r}: {detail}") from err
    if len(data) == 0:
        raise BadInput(f"{source}: split {split!r} has no rows")
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    return data.to_list()


def _load_dataset(path: str, split: str, pin: Pin) -> datasets.Dataset:
    local = Path(path)
    builders = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
    single = (local.is_file() or (local / "dataset_dict.json").is_file()
              or (local / "state.json").is_file())
    if pin.config is not None and single:
        raise ValueError(f"config {pin.config!r} names one of a hub or data directory's "
                         "configs; this source has only one")
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
    # The hub's progress bars are off (in Ray workers they print a line per redraw): one line
    # says what a long first download is waiting on. A local data directory downloads nothing.
    if not local.is_dir():
        print(f"[didray] hub: loading dataset {path} ({pin.config or 'default'} config, "
              f"{pin.revision or 'main'}, split {split})", file=sys.stderr, flush=True)
    return datasets.load_dataset(path, pin.config, split=split, revision=pin.revision)


def load_preference_rows(source: str, split: str = "train", limit: int | None = None,
                         pin: Pin = Pin()) -> list[dict[str, str]]:
    """Rows of `prompt` and, where the dataset has them, `chosen`, `rejected`, `reference`, as
    plain strings. Conversational columns give the last user (prompt) or assistant message.
    A column null in every row is absent: a data directory's split files share one schema, so
    a held-out split written without `chosen` reads back with `chosen` null throughout."""
    rows = load_rows(source, split, limit, pin)
    columns = {c for c in rows[0] if any(row[c] is not None for row in rows)}
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


def check_heldout(training: list[str], evaluation: list[str], source: str, splits: tuple[str, str]
                  ) -> None:
    """Refuse evaluation prompts that are also training prompts (compared as stripped text):
    a policy scored on what it trained on measures recall of its data, not instruction
    following (docs/design.md §6.2). `splits`: the training and the evaluation split."""
    seen = {p.strip() for p in training}
    shared = [p for p in evaluation if p.strip() in seen]
    if shared:
        raise BadInput(
            f"eval.split {splits[1]!r} of data.source {source!r}: {len(shared)} of its "
            f"{len(evaluation)} evaluation prompts are training prompts of data.split "
            f"{splits[0]!r} (e.g. {shared[0]!r}); evaluation must be on held-out prompts. Name "
            "a split with other prompts; a single .jsonl, .json or .parquet file is one split "
            "whatever it is called, so put the two sets in a directory as train.jsonl and "
            "test.jsonl (docs/design.md §6.2)")


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


def load_qa(source: str, split: str = "train", limit: int | None = None,
            pin: Pin = Pin()) -> list[QAItem]:
    """QA items from columns `question`, `answer` (a string, a list of aliases, or the index of
    the right choice as in MMLU) and the optional `choices` (strings, one of them the answer)."""
    rows = load_rows(source, split, limit, pin)
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
