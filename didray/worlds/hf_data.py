"""The hf world's data: preference datasets and QA sets, from the hub or local files.

Datasets follow TRL's formats: standard (strings) or conversational (lists of chat messages).
Every row comes back as plain strings, and a bad row is reported by source, row and column.
Rows a sweep cannot learn from are counted per reason and dropped, or refused above
data.max_bad_fraction (docs/design.md §3.3).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from didray.errors import BadInput
from didray.worlds.hf import resolve_path
from didray.worlds.text import conversation_prompt, prompt_messages

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected", "reference")


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
    local = Path(path)
    if local.is_file() and local.stat().st_size == 0:
        raise BadInput(f"{source}: the file is empty")
    if local.is_file() and local.suffix in (".jsonl", ".json") and pin.config is None:
        rows = _json_rows(source, local.read_bytes(), local.suffix)[:limit]
    else:
        rows = _dataset_rows(source, path, split, limit, pin)
    if not rows:
        raise BadInput(f"{source}: split {split!r} has no rows")
    return rows


def _dataset_rows(source: str, path: str, split: str, limit: int | None, pin: Pin) -> list[dict]:
    try:
        data = _load_dataset(path, split, pin)
    except (datasets.exceptions.DatasetsError, OSError, ValueError) as err:
        # A generation error's own message is generic; the parse error is its cause.
        detail = f"{err}: {err.__cause__}" if err.__cause__ else str(err)
        raise BadInput(f"{source}: cannot load split {split!r}: {detail}") from err
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    try:
        return data.to_list()
    except UnicodeDecodeError as err:  # Arrow keeps the bytes; they fail only when read
        for file in sorted(Path(path).rglob("*.json*")) if Path(path).is_dir() else ():
            _utf8(str(file), file.read_bytes())  # names the file, line and offset
        raise BadInput(f"{source}: split {split!r} is not UTF-8 text ({err})") from err


def _json_rows(source: str, data: bytes, suffix: str) -> list[dict]:
    """A .jsonl or .json file's rows as the file writes them. Python's json keeps each value's
    type: datasets' pandas fallback, taken when a column mixes types, reads "12" as 12 and so
    names row 0 for a later row's number. Columns missing from a row are null there."""
    text = _utf8(source, data).removeprefix("\ufeff")
    whole = None
    # A .json file may hold JSON lines, as datasets reads it.
    with contextlib.suppress(json.JSONDecodeError):
        whole = json.loads(text) if suffix == ".json" else None
    rows = whole if isinstance(whole, list) else _json_lines(source, text)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadInput(f"{source}: row {i} is a {type(row).__name__}, not an object of "
                           "columns")
    columns = dict.fromkeys(c for row in rows for c in row)
    return [{c: row.get(c) for c in columns} for row in rows]


def _json_lines(source: str, text: str) -> list:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BadInput(f"{source}: line {n} is not JSON: {err.msg} at column "
                               f"{err.colno}") from err
    return rows


def _utf8(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise BadInput(
            f"{source}: not UTF-8 text: byte 0x{data[err.start]:02x} at byte offset "
            f"{err.start} (line {line}) is {err.reason}; datasets are read as UTF-8, so convert "
            "the file first (for a Latin-1 file: iconv -f latin1 -t utf-8)") from err


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
    plain strings (null reads as empty). A conversational prompt keeps every message
    (`text.conversation_prompt`); a conversational answer is its last assistant message.
    A column null in every row is absent: a data directory's split files share one schema, so
    a held-out split written without `chosen` reads back with `chosen` null throughout."""
    rows = load_rows(source, split, limit, pin)
    columns = {c for c in rows[0] if any(row[c] is not None for row in rows)}
    if "prompt" not in columns:
        raise BadInput(f"{source}: no 'prompt' column (have {', '.join(sorted(columns))})")
    present = [c for c in PREFERENCE_COLUMNS if c in columns]
    return [{c: _column_text(source, i, c, row[c]) for c in present}
            for i, row in enumerate(rows)]


@dataclass(frozen=True)
class RowRules:
    """What makes a preference row unusable beyond its columns' types: a prompt longer than
    `too_long` allows (None: any length), and what fraction of such rows is dropped rather
    than refused (docs/design.md §3.3)."""

    max_bad_fraction: float = 0.01
    too_long: Callable[[str], bool] | None = None


def bad_rows(rows: list[dict[str, str]], rules: RowRules) -> dict[str, list[int]]:
    """Each reason a row cannot be used -> the rows (numbered as in the split) it holds for."""
    bad: dict[str, list[int]] = {}
    seen = set()
    for i, row in enumerate(rows):
        key = tuple(row.items())
        for reason in _reasons(row, rules, duplicate=key in seen):
            bad.setdefault(reason, []).append(i)
        seen.add(key)
    return bad


def _reasons(row: dict[str, str], rules: RowRules, duplicate: bool) -> list[str]:
    said = "".join(m["content"] for m in prompt_messages(row["prompt"])).strip()
    reasons = [f"an empty {c}" for c in ("chosen", "rejected") if c in row and not row[c].strip()]
    if not said:
        reasons.insert(0, "an empty prompt")
    elif rules.too_long is not None and rules.too_long(row["prompt"]):
        reasons.append("a prompt over train.max_prompt_tokens")
    if row.get("chosen", "").strip() and row["chosen"].strip() == row.get("rejected", "").strip():
        reasons.append("chosen equal to rejected")
    return reasons + ["a duplicate of an earlier row"] * duplicate


def usable_rows(rows: list[dict[str, str]], rules: RowRules, where: str,
                progress: Callable[[str], None]) -> list[dict[str, str]]:
    """The rows without the bad ones, each reason said in a progress line; refused when more
    than rules.max_bad_fraction of the rows are bad. `where` names the source and split."""
    bad = bad_rows(rows, rules)
    dropped = set().union(*bad.values())
    if len(dropped) > rules.max_bad_fraction * len(rows) or len(dropped) == len(rows):
        limit = (f"more than data.max_bad_fraction={rules.max_bad_fraction:g} allows"
                 if len(dropped) < len(rows) else "none is left")
        reasons = "; ".join(f"{len(at)} with {reason} ({_rows(at)})" for reason, at in bad.items())
        raise BadInput(
            f"{where}: {len(dropped)} of its {len(rows)} rows cannot be used, {limit}: "
            f"{reasons}. Fix or remove those rows, or raise data.max_bad_fraction to drop them "
            "(docs/design.md §3.3)")
    for reason, at in bad.items():
        progress(f"data: dropping {len(at)} rows of {where} with {reason} ({_rows(at)})")
    return [row for i, row in enumerate(rows) if i not in dropped]


def _rows(numbers: list[int], shown: int = 5) -> str:
    more = f" and {len(numbers) - shown} more" if len(numbers) > shown else ""
    return f"row{'s' * (len(numbers) > 1)} {', '.join(map(str, numbers[:shown]))}{more}"


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
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list) and value and all(_is_message(m) for m in value):
        return _conversation_text(source, i, column, value)
    raise BadInput(f"{source}: row {i}, column {column!r}: expected a string or a list of "
                   f"{{'role', 'content'}} messages, got {type(value).__name__}")


def _conversation_text(source: str, i: int, column: str, messages: list[dict]) -> str:
    """A prompt keeps the whole conversation (one user message stays plain text); an answer is
    its last assistant message."""
    role = "user" if column == "prompt" else "assistant"
    if not any(m["role"] == role for m in messages):
        raise BadInput(f"{source}: row {i}, column {column!r}: no {role} message")
    if column != "prompt":
        return [m["content"] for m in messages if m["role"] == role][-1]
    if messages[-1]["role"] != "user":
        raise BadInput(f"{source}: row {i}, column 'prompt': the conversation ends with a "
                       f"message of role {messages[-1]['role']!r}; the policy answers the "
                       "user's last message")
    return messages[0]["content"] if len(messages) == 1 else conversation_prompt(messages)


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
