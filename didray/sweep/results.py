"""Results on disk: Parquet tables and a JSON manifest, each replaced atomically.

Readers (a notebook polling a running sweep, `didray analyze`) only ever see a complete file:
every write goes to a temporary file in the same directory, then `os.replace`s the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import polars as pl


def content_hash(*parts: object) -> str:
    """Short sha256 of JSON-serialisable parts: names caches and datasets by their recipe."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    _atomic_write(path, frame.write_parquet)


def write_json(obj: object, path: Path) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, default=str)))


def read_json(path: Path, default: object = None) -> object:
    return json.loads(path.read_text()) if path.exists() else default


def rows_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows with differing keys (a failed trial has no eval scores) as one frame, nulls filled."""
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()
