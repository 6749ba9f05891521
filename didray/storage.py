"""Where results and the shared cache live: a local directory, or a URI that pyarrow opens
(s3://, gs://, abfs://, hdfs://) kept in step with a local mirror (docs/design.md §3.5).

didray reads and writes the mirror with the atomic, sealed file I/O of didray.files, copies
what it wrote to the URI (`push`) and what it needs from it (`pull`); Ray Tune and Train write
their experiment state and checkpoints to the URI themselves (`for_ray`). For a local
directory the mirror is the directory itself and both copies do nothing.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from didray.errors import BadInput
from didray.files import INDEX, atomic_write, json_hash, seal_path

# What pyarrow.fs.FileSystem.from_uri opens besides local paths.
SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss", "hdfs", "viewfs")
BUCKETED = ("s3", "gs", "gcs")  # object stores whose path starts with a bucket
# Object stores whose object appears only once its upload completes: a push writes there
# directly. HDFS and Azure Data Lake files are visible, growing, while they are written.
WHOLE_PUTS = ("s3", "gs", "gcs")
URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
UNSET = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")  # what os.path.expandvars leaves: unset
PROBE_TIMEOUT_S = 10.0  # how long `check` waits for a remote storage to answer
# Credentials pyarrow takes from a URI: a userinfo with a password (s3://KEY:SECRET@bucket,
# abfs://account:KEY@container), any userinfo of s3 (its access key) and abfs's
# ?client_secret=. The password runs to the last @ (an unencoded / or @ in a secret key is
# still hidden); a host's :port is not one (hdfs://host:8020/trial@1 has none).
USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)"
                      r"(?:[^/?#@:\s]*:(?!\d*(?:[/?#\s]|$))[^?#\s]*|(?<=s3://)[^/?#:\s]+)@")
SECRET_QUERY = re.compile(r"(?P<key>[?&][^=&#\s]*(?:secret|token|password)[^=&#\s]*=)[^&#\s]*",
                          re.IGNORECASE)


def is_uri(where: str | Path) -> bool:
    """A remote location (file:// names a local path)."""
    match = URI.match(str(where))
    return match is not None and match.group(1).lower() != "file"


class LocationError(BadInput, ValueError):
    """A storage location refused: bad input to the CLI (exit 2), and a ValueError to the
    sweep file's schema, which reports it at its field."""


def redact(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by ***: for messages, which
    may quote a refused URI as it was typed."""
    return SECRET_QUERY.sub(r"\g<key>***", USERINFO.sub(r"\g<scheme>***@", text))


def refuse_credentials(where: str) -> None:
    """A URI carrying credentials is refused: they would be printed in messages and written
    into manifest.json and every checkpoint_path (docs/design.md §3.3)."""
    if (shown := redact(where)) != where:
        raise LocationError(
            f"{shown!r} carries credentials in the URI (hidden here as ***); didray "
            "refuses them, as they would be printed and written into manifest.json and "
            "checkpoint paths. Give them through the environment instead (AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS; "
            "AZURE_CLIENT_SECRET) and drop them from the URI")


def check_location(where: object) -> str:
    """`where` as a storage location: a local path, `~` and `$VARS` expanded, or a URI of a
    scheme pyarrow opens, without credentials in it (ValueError otherwise). Nothing is
    opened: that needs the network (`Storage.check`). Refused: no text (`storage: null` would
    write to ./None), control characters (a NUL cannot be in a path), an unset variable, and
    the filesystem's root, where the shared store would be /cache and every sweep a
    top-level directory."""
    if not isinstance(where, str | Path):
        what = "null" if where is None else f"the {type(where).__name__} {str(where)[:40]}"
        raise ValueError(f"must be a path or URI (text), not {what}")
    given = str(where)
    refuse_credentials(given)
    if not given.strip():
        raise ValueError("must be a path or URI, not empty")
    if not given.isprintable():
        raise ValueError(f"{given!r}: a path or URI has no unprintable characters")
    where = os.path.expanduser(os.path.expandvars(given.removeprefix("file://")))
    if unset := UNSET.search(where):
        raise ValueError(f"{given!r}: the environment variable {unset.group(1)} is not set")
    if (match := URI.match(where)) and match.group(1).lower() not in SCHEMES:
        raise ValueError(f"{given!r}: {match.group(1)}:// is not a storage didray can write; "
                         f"use a local path or a URI of {', '.join(s + '://' for s in SCHEMES)}")
    if not match and Path(os.path.abspath(where)).parent == Path(os.path.abspath(where)):
        raise ValueError(f"{given!r} is the filesystem's root: give a directory for the results")
    return where


def mirror_root() -> Path:
    """Where remote storages are mirrored on this machine (DIDRAY_MIRROR to move it)."""
    return Path(os.environ.get("DIDRAY_MIRROR", "~/.cache/didray/mirror")).expanduser()


@functools.cache
def _filesystem(uri: str):
    """(pyarrow filesystem, path in it) of `uri`; opened once per process."""
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


@functools.cache
def _local_fs():
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem()


def _copy(source: str, source_fs, destination: str, destination_fs) -> None:
    """One file from one filesystem to the other, streamed in chunks. An object store's
    object appears only once the whole file is uploaded (S3: when the upload completes)."""
    import pyarrow.fs

    pyarrow.fs.copy_files(source, destination, source_filesystem=source_fs,
                          destination_filesystem=destination_fs)


def puts_whole(uri: str) -> bool:
    """Whether a file copied to `uri`'s storage is seen by readers only once complete."""
    return URI.match(uri).group(1).lower() in WHOLE_PUTS


def _put(file: Path, fs, target: str, whole: bool) -> None:
    """Copy the local `file` to `target` in `fs`. Where a file is visible while written
    (`whole` false: hdfs://, abfs://), it is copied to a temporary name beside `target` and
    moved into place, as didray.files.atomic_write does locally: a reader (`didray analyze`
    of a sweep being extended) never finds half a table under its name (docs/design.md §3.5)."""
    import pyarrow.fs

    if whole:
        _copy(str(file), _local_fs(), target, fs)
        return
    head, _, name = target.rpartition("/")
    partial = f"{head}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        _copy(str(file), _local_fs(), partial, fs)
        fs.move(partial, target)
    finally:
        if fs.get_file_info(partial).type != pyarrow.fs.FileType.NotFound:
            fs.delete_file(partial)  # what a failed copy left


def _is_index(path: str) -> bool:
    """Files that say another file or directory is complete: copied after what they seal."""
    return path.endswith(INDEX)


@dataclass(frozen=True)
class Storage:
    """A storage root: `uri` (None for a local directory) and `local`, its mirror. Paths
    handed around are mirror paths; only strings are held, so it pickles to Ray workers,
    each of which opens the filesystem itself."""

    uri: str | None
    local: Path

    @classmethod
    def of(cls, where: str | Path) -> Storage:
        where = check_location(where)
        if not is_uri(where):
            return cls(None, Path(where).resolve())
        base = where.split("?", 1)[0].rstrip("/")
        # The last component keeps its name: a sweep's directory is named after the sweep.
        return cls(where, mirror_root() / json_hash(base) / base.rsplit("/", 1)[-1])

    @property
    def remote(self) -> bool:
        return self.uri is not None

    def _fs(self):
        return _filesystem(self.uri)

    def fs_path(self, path: Path) -> str:
        """The path in the remote filesystem of the mirror path `path`."""
        rel = Path(path).relative_to(self.local).as_posix()
        root = self._fs()[1].rstrip("/")
        return root if rel == "." else f"{root}/{rel}"

    def uri_of(self, fs_path: str) -> str:
        """A URI of a path in the remote filesystem (a checkpoint Ray wrote), query kept."""
        base, _, query = self.uri.partition("?")
        rel = fs_path.removeprefix(self._fs()[1].rstrip("/")).lstrip("/")
        return f"{base.rstrip('/')}/{rel}" + (f"?{query}" if query else "")

    def for_ray(self, path: Path) -> tuple[str, object]:
        """Ray's (storage_path, storage_filesystem) for the mirror path `path`."""
        return (self.fs_path(path), self._fs()[0]) if self.remote else (str(path), None)

    def check(self, timeout_s: float | None = None) -> None:
        """Refuse, in one paragraph, a remote storage that cannot be opened or listed, or does
        not answer within `timeout_s` (PROBE_TIMEOUT_S): pyarrow waits on an unreachable
        service (a gs:// URI offline hung `validate` past 300 s). The probe runs in a daemon
        thread, abandoned if it does not answer: pyarrow cannot cancel it."""
        if not self.remote:
            return
        outcome: list = []
        probe = threading.Thread(target=lambda: outcome.append(self._probe()), daemon=True)
        probe.start()
        wait = PROBE_TIMEOUT_S if timeout_s is None else timeout_s
        probe.join(wait)
        if not outcome:
            outcome.append(f"no answer within {wait:g} s: is this machine offline, or the "
                           "endpoint wrong?")
        if outcome[0] is not None:
            raise BadInput(
                f"storage {self.uri!r} cannot be opened ({outcome[0]}); check "
                "the URI, the network, the credentials in the environment (AWS_*, GOOGLE_"
                "APPLICATION_CREDENTIALS, AZURE_*) and, for S3-compatible servers, "
                "?endpoint_override=HOST:PORT&scheme=http")

    def check_writable(self, *directories: Path) -> None:
        """Refuse, in one paragraph, a local directory this process cannot write, or could
        not create: validate and run say so before Ray starts, where writing the lease,
        tables, manifest or Tune state would fail with a traceback (docs/design.md §3.3).
        A remote storage's permissions are its service's, found by the first write."""
        if self.remote:
            return
        for directory in directories:
            if why := unwritable(directory):
                raise BadInput(
                    f"{directory}: {why}. didray writes a sweep's lease, tables, manifest and "
                    "Tune state there, also to resume or extend a finished sweep. Make it "
                    f"writable (`chmod -R u+w {directory}` if it is yours, or remount a "
                    "read-only disk), or give another `storage` (nothing was changed)")

    def _probe(self) -> str | None:
        """Why the remote storage cannot be listed, or None. On an object store the bucket
        must exist: didray does not create one, and without it the first write would fail
        after prepare."""
        import pyarrow.fs

        try:
            fs, root = self._fs()
            fs.get_file_info(root)
            bucket = root.split("/")[0]
            if (URI.match(self.uri).group(1).lower() in BUCKETED
                    and fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound):
                return f"the bucket {bucket!r} does not exist; create it first"
        except (OSError, ValueError) as err:
            return str(err).splitlines()[0]
        return None

    def exists(self, path: Path) -> bool:
        if not self.remote:
            return path.exists()
        import pyarrow.fs

        fs, _ = self._fs()
        return fs.get_file_info(self.fs_path(path)).type != pyarrow.fs.FileType.NotFound

    def _remote_files(self, path: Path) -> list[str]:
        """The files at or under the mirror path `path` in the remote filesystem."""
        import pyarrow.fs

        fs, _ = self._fs()
        info = fs.get_file_info(self.fs_path(path))
        if info.type == pyarrow.fs.FileType.File:
            return [info.path]
        if info.type != pyarrow.fs.FileType.Directory:
            return []
        selector = pyarrow.fs.FileSelector(info.path, recursive=True)
        return [f.path for f in fs.get_file_info(selector) if f.type == pyarrow.fs.FileType.File]

    def pull(self, *paths: Path) -> bool:
        """Copy the remote files or directory trees at `paths` into the mirror, each file
        replaced atomically, indexes and seals last; returns whether there was any.

        File by file (`_copy`), not `pyarrow.fs.copy_files` of a directory: that copies a
        tree's files concurrently in no set order and writes each in place, so a reader
        could find a seal before its file, or half a file."""
        if not self.remote:
            return any(p.exists() for p in paths)
        fs, _ = self._fs()
        found = [(path, name) for path in paths for name in self._remote_files(path)]
        for path, name in sorted(found, key=lambda pair: _is_index(pair[1])):
            root = self.fs_path(path)
            target = path / name[len(root) + 1:] if name != root else path
            atomic_write(target, lambda tmp, name=name: _copy(name, fs, tmp, _local_fs()))
        return bool(found)

    def push(self, *paths: Path) -> None:
        """Copy the mirror's files or directory trees at `paths` to the remote, indexes and
        seals last: a reader of the remote never finds a seal before what it seals. A path
        absent from the mirror is skipped."""
        if not self.remote:
            return
        fs, _ = self._fs()
        files = [f for path in paths
                 for f in ([path] if path.is_file() else sorted(path.rglob("*")))
                 if f.is_file()]
        whole = puts_whole(self.uri)
        for file in sorted(files, key=lambda p: _is_index(p.name)):  # one by one: see `pull`
            _put(file, fs, self.fs_path(file), whole)

    def read_remote(self, path: Path) -> tuple[bytes, float] | None:
        """(content, age in seconds by its modification time) of the remote file at the mirror
        path `path`, None if there is none: how a driver reads another machine's lease."""
        import pyarrow.fs

        fs, _ = self._fs()
        info = fs.get_file_info(self.fs_path(path))
        if info.type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(info.path) as src:
            data = src.read()
        return data, (time.time() - info.mtime.timestamp()) if info.mtime else 0.0

    def delete(self, path: Path) -> None:
        """Remove the remote file at the mirror path `path`."""
        fs, _ = self._fs()
        fs.delete_file(self.fs_path(path))

    def ensure(self, *paths: Path) -> None:
        """Pull each cache entry at `paths` that this machine's mirror lacks: a directory
        without its integrity index, or a file without its seal (both copied last, so an
        interrupted copy is pulled again). Ray workers on other nodes call this before they
        read what the driver prepared."""
        if not self.remote:
            return
        for path in paths:
            if not path.is_relative_to(self.local):
                continue  # a hub name or a directory outside the storage: each node's own
            if not (path / INDEX).is_file() and not seal_path(path).is_file():
                self.pull(path, seal_path(path))

    def files(self, directory: Path, pattern: str) -> list[Path]:
        """Mirror paths of the files directly in `directory` whose names match `pattern`, as
        the storage (the remote, not the mirror) holds them."""
        if not self.remote:
            return sorted(p for p in directory.glob(pattern) if p.is_file())
        root = self.fs_path(directory)
        names = (n[len(root) + 1:] for n in self._remote_files(directory))
        return sorted(directory / n for n in names if "/" not in n and fnmatch(n, pattern))


def unwritable(directory: Path) -> str | None:
    """Why this process cannot write in `directory`, or make it where it does not exist yet
    (its nearest existing ancestor decides), or None."""
    existing = next(p for p in (directory, *directory.parents) if os.path.exists(p))
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return f"{existing} is on a read-only filesystem"
    if not os.access(existing, os.W_OK | os.X_OK, effective_ids=True):  # as a write is
        return (f"{existing} is not writable by this user (mode "
                f"{stat.filemode(existing.stat().st_mode)})")
    return None
