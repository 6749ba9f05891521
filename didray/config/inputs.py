"""The local inputs a sweep file names (the hf world's dataset, QA set, model and scorers):
a relative path is read from the sweep file's directory, one typed in an override from the
working directory, and a path that does not exist is refused when the file is loaded (at
`didray validate`), never looked up on the Hugging Face hub (docs/design.md §3.3)."""

from __future__ import annotations

import os
from pathlib import Path

from didray.config.paths import KeyPath, dotted, get, put

# The fields that take a hub name, a local path or python-package:NAME[/sub].
INPUT_FIELDS: tuple[KeyPath, ...] = (
    ("data", "source"), ("eval", "qa", "source"), ("model", "hf", "path"),
    ("eval", "scorer", "path"), ("data", "scorer", "path"))
# What no hub name is: a hub name is `name` or `owner/name`, never a data file's name.
LOCAL_PREFIXES = ("./", "../", "/", "~")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".arrow", ".txt")
NOT_PATHS = ("python-package:", "hf://")  # read by didray.worlds.hf / datasets, not as paths


def looks_local(value: str) -> bool:
    """Whether `value` can only be a local path: `./x`, `../x`, `/x`, `~/x` or a data file."""
    return value.startswith(LOCAL_PREFIXES) or value.lower().endswith(DATA_SUFFIXES)


def value_at(node: object, key: KeyPath) -> str | None:
    """The text at `key` in plain sweep data or a Sweep; None where a section is left out."""
    try:
        value = get(node, key)
    except (AttributeError, KeyError, TypeError):  # a missing section (None, or no key)
        return None
    return value if isinstance(value, str) else None


def anchored(value: str, base: Path) -> str:
    """`value` as read from the directory `base`: a relative path that exists there, written
    relative to the working directory when it lies below it (so the manifest, the cache keys
    and a submitted job, which runs from the uploaded working directory, name it as before),
    else absolute; a missing one that looks local, absolute (still looking local for
    `missing`); a hub name, a URI or an absolute path as given."""
    if value.startswith("~"):
        return os.path.expanduser(value)
    if os.path.isabs(value) or value.startswith(NOT_PATHS):
        return value
    path = os.path.normpath(base / value)
    if not os.path.exists(path):
        return os.path.abspath(path) if looks_local(value) else value  # else a hub name
    here = os.path.relpath(path)
    return os.path.abspath(path) if Path(here).parts[:1] == ("..",) else here


def read_from(data: dict, base: Path) -> dict:
    """`data` (a sweep file's content) with each input path read from `base`."""
    for key in INPUT_FIELDS:
        if (value := value_at(data, key)) is not None:
            data = put(data, key, anchored(value, base))
    return data


def missing(sweep: object, base: Path) -> list[tuple[str, str]]:
    """(field, problem) for each input that looks local and does not exist."""
    problems = []
    for key in INPUT_FIELDS:
        value = value_at(sweep, key)
        if value is not None and looks_local(value) and not os.path.exists(value):
            problems.append((dotted(key), (
                f"{os.path.abspath(value)} does not exist; a relative path in the sweep file "
                f"is read from its directory ({os.path.abspath(base)}), one in an override "
                "from the working directory, and a path is never looked up on the Hugging Face "
                "hub (a hub name is owner/name)")))
    return problems
