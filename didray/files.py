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

from didray.errors import BadInput


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
    """The JSON in `path` (`default` if there is none); a truncated or corrupt file is a
    BadInput naming it, never a traceback or a silently wrong value."""
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not readable JSON ({err}); the file is truncated or corrupt, "
                       "restore it from a copy or remove it") from None


def read_manifest(path: Path) -> dict:
    """A sweep's manifest.json ({} when the sweep wrote none yet)."""
    manifest = read_json(path, {})
    if not isinstance(manifest, dict):
        raise BadInput(f"{path}: a sweep manifest is a JSON object, this holds a "
                       f"{type(manifest).__name__}; the file is corrupt")
    return manifest


INDEX = "integrity.json"  # written last into a checkpoint or cache directory


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_index(directory: Path) -> None:
    """Size and sha256 of every file in `directory`, written last: what `damage` checks."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != INDEX)
    index = {str(p.relative_to(directory)): [p.stat().st_size, sha256_file(p)] for p in files}
    (directory / INDEX).write_text(json.dumps(index))


def damage(directory: Path) -> str | None:
    """Why `directory` does not match its index (missing, truncated, altered), or None."""
    try:
        index = json.loads((directory / INDEX).read_text())
    except (OSError, ValueError):
        return f"no readable {INDEX} (written last, so the directory is incomplete)"
    for name, (size, digest) in index.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
        if sha256_file(path) != digest:
            return f"{name} differs from what was written (sha256)"
    return None


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
