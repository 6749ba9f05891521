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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600/0700 entries; swapped in as they are, results and caches on a
# shared cluster disk would be unreadable by everyone but their writer. Read once at import:
# os.umask can only be read by setting it.
FILE_MODE, DIR_MODE = 0o666 & ~_umask(), 0o777 & ~_umask()


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """`write(tmp)` to a temporary file beside `path`, then swap it in (mode 0666 less the
    umask, as a plain `open` would have made it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
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


def manifest_json(path: Path) -> dict:
    """A sweep's manifest.json, any version ({} when the sweep wrote none yet): what
    `didray analyze` checks; `didray.sweep.state.read_manifest` types it."""
    manifest = read_json(path, {})
    if not isinstance(manifest, dict):
        raise BadInput(f"{path}: a sweep manifest is a JSON object, this holds a "
                       f"{type(manifest).__name__}; the file is corrupt")
    return manifest


INDEX = "integrity.json"  # written last into a checkpoint or cache directory
# A sweep's results tables, in its directory (didray.sweep.results): what analysis reads.
TABLES = ("trials.parquet", "steps.parquet", "evals.parquet")


def size_and_sha256(path: Path) -> list:
    """[size, sha256] of one open file: both describe the same version even if `path` is
    replaced meanwhile."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        return [os.fstat(f.fileno()).st_size, digest.hexdigest()]


def write_index(directory: Path) -> None:
    """Size and sha256 of every file in `directory`, written last: what `damage` checks."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != INDEX)
    index = {str(p.relative_to(directory)): size_and_sha256(p) for p in files}
    (directory / INDEX).write_text(json.dumps(index))


def _mismatch(name: str, path: Path, size: int, digest: str | None) -> str | None:
    """Why `path` is not the file of this size and sha256 (size only when digest is None)."""
    if not path.is_file():
        return f"{name} is missing"
    if path.stat().st_size != size:
        return f"{name} has {path.stat().st_size} bytes, {size} were written"
    if digest is not None and size_and_sha256(path)[1] != digest:
        return f"{name} differs from what was written (sha256)"
    return None


def damage(directory: Path, hashed: bool = True) -> str | None:
    """Why `directory` does not match its index (missing, truncated, altered), or None.
    `hashed=False` checks sizes only: enough for truncation, cheap for gigabytes of weights."""
    try:
        index = json.loads((directory / INDEX).read_text())
    except (OSError, ValueError):
        return f"no readable {INDEX} (written last, so the directory is incomplete)"
    for name, (size, digest) in index.items():
        if problem := _mismatch(name, directory / name, size, digest if hashed else None):
            return problem
    return None


def unusable(final: Path, complete: Callable[[Path], bool], hashed: bool = True) -> str | None:
    """Why the built directory `final` cannot be reused (absent, incomplete, damaged), or None."""
    if not final.exists():
        return "absent"
    if not complete(final):
        return "incomplete"
    return damage(final, hashed)


def build_once(final: Path, complete: Callable[[Path], bool],
               write: Callable[[Path], None], say: Callable[[str], None] | None = None,
               hashed: bool = True) -> bool:
    """Make the directory `final` by `write(tmp)` unless it is complete and matches its
    integrity index; returns whether it was written. The index is written last, so a crash
    never leaves a half-written entry that would later be mistaken for a finished one, and a
    truncated or altered entry is rebuilt (`say` tells why) instead of used."""
    problem = unusable(final, complete, hashed)
    if problem is None:
        return False
    if say is not None and final.exists():
        say(f"cache: {final} cannot be reused ({problem}); rebuilding it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        write(tmp)
        write_index(tmp)
        os.chmod(tmp, DIR_MODE)
        if final.exists() and unusable(final, complete, hashed):
            shutil.rmtree(final)  # damaged, or a partial entry from an older writer
        try:
            os.replace(tmp, final)
        except OSError:
            if unusable(final, complete, hashed):  # someone else finished first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def seal_path(path: Path) -> Path:
    """A single file's integrity index: `<name>.integrity.json` beside it."""
    return path.with_name(f"{path.name}.{INDEX}")


def _read_seal(path: Path) -> list[list] | None:
    """The versions of `path` its seal accepts (one, or two while `sealed_write` swaps it)."""
    try:
        seal = json.loads(seal_path(path).read_text())
    except (OSError, ValueError):
        return None
    return [seal] if seal and not isinstance(seal[0], list) else seal


def _write_seal(path: Path, versions: list[list]) -> None:
    seal = versions[0] if len(versions) == 1 else versions
    atomic_write(seal_path(path), lambda tmp: Path(tmp).write_text(json.dumps(seal)))


def sealed_write(path: Path, write: Callable[[str], object]) -> None:
    """`atomic_write`, with the file's size and sha256 beside it. While the file is swapped
    the seal accepts the old version and the new one, so neither a reader meanwhile nor a
    crash in between finds the file unsealed (in a sealed sweep that is damage, §3.3) or
    sealed with another file's hash."""
    def write_then_seal_both(tmp: str) -> None:
        write(tmp)
        _write_seal(path, [*(_read_seal(path) or [])[-1:], size_and_sha256(Path(tmp))])

    atomic_write(path, write_then_seal_both)
    _write_seal(path, [size_and_sha256(path)])


def file_damage(path: Path, unsealed_ok: bool = False,
                measure: Callable[[], list] | None = None) -> str | None:
    """Why the file `path` differs from what `sealed_write` wrote, or None. `measure` gives
    the [size, sha256] of the bytes the caller keeps (default: hash the file). A file without
    a seal is damage unless `unsealed_ok` (results of a sweep that sealed nothing).

    A writer may replace the file while this reads it (a running sweep rewrites its tables):
    the seal is read before and after the bytes are, and the bytes count as intact if either
    accepts them; only a mismatch against a seal that stayed the same is damage."""
    for _ in range(5):
        before = _read_seal(path)
        if before is None:
            return None if unsealed_ok else f"{path.name} has no readable {seal_path(path).name}"
        if not path.is_file():
            return f"{path.name} is missing"
        actual = measure() if measure else size_and_sha256(path)
        after = _read_seal(path) or []
        if actual in before + after:
            return None
        if before == after:
            return (f"{path.name} has {actual[0]} bytes, {before[-1][0]} were written"
                    if actual[0] != before[-1][0] else
                    f"{path.name} differs from what was written (sha256)")
    return f"{path.name} kept changing while it was checked"


def has_seals(directory: Path) -> bool:
    """Whether a sweep directory's results were sealed: its manifest says so, or a seal lies
    beside its tables or its trials' parts (steps/, evals/). Then every table must have one
    (docs/design.md §3.3): deleting every seal does not make an older, unsealed sweep."""
    return bool(manifest_json(directory / "manifest.json").get("sealed")) or any(
        next(d.glob(f"*.parquet.{INDEX}"), None)
        for d in (directory, directory / "steps", directory / "evals"))


def read_sealed(path: Path, sealed: bool) -> bytes:
    """The bytes of `path`, checked against its seal: what the caller parses is what was
    checked, even if a writer replaces the file meanwhile (a reader that checked the file,
    then opened it again, could read one version's footer with another's pages). Raises
    BadInput when they differ from what didray wrote (a flipped byte can decode to a
    plausible, wrong number), or have no seal where the sweep is `sealed`; a file of a sweep
    that sealed nothing (an older didray) passes."""
    data = None

    def read() -> list:
        # Read again on each try, between the two seal reads: bytes read before the first
        # could be a version the writer has since sealed away.
        nonlocal data
        data = path.read_bytes()
        return [len(data), hashlib.sha256(data).hexdigest()]

    if problem := file_damage(path, unsealed_ok=not sealed, measure=read):
        raise BadInput(f"{path}: changed after didray wrote it ({problem}); the file is "
                       "corrupt: restore it and its seal from a copy of the sweep")
    return path.read_bytes() if data is None else data  # None: no seal, nothing was read
