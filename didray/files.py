"""The bottom layer for everything didray writes: atomic files and directories, content hashes.

Readers (a notebook polling a running sweep, `didray analyze`, a resumed run) only ever see a
complete file or directory: every write goes to a temporary name beside the final one, which
`os.replace` then swaps in. One implementation of each, used by every layer above.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def json_hash(obj: object) -> str:
    """Short sha256 of a JSON-serialisable object (keys sorted): names caches by recipe."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_hash(*parts: object) -> str:
    """`json_hash` of several parts: names datasets and caches by what they are built from."""
    return json_hash(parts)


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then swap it in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(obj: object, path: Path) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, default=str)))


def read_json(path: Path, default: object = None) -> object:
    return json.loads(path.read_text()) if path.exists() else default


def build_once(final: Path, complete: Callable[[Path], bool],
               write: Callable[[Path], None]) -> bool:
    """Make the directory `final` by `write(tmp)` unless `complete(final)`; returns whether it
    was written. A crash never leaves a half-written entry that would later be mistaken for a
    finished one."""
    if complete(final):
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        write(tmp)
        if final.exists() and not complete(final):
            shutil.rmtree(final)  # a stale partial entry from an older, non-atomic writer
        try:
            os.replace(tmp, final)
        except OSError:
            if not complete(final):  # someone else finished first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
