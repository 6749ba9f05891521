"""The one exception type for bad user input: the CLI prints `report()` and exits with code 2;
and the one environment failure recognised however it arrives: a full disk."""

import errno
import re

# What a write that found no room raises; a file size limit (ulimit -f) reads the same to
# whoever wrote the file.
NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EFBIG: "a file size limit (ulimit -f) was reached, or the disk is full"}
# pyarrow's errors carry the errno only in their text ("Detail: [errno 28] No space ...").
NO_ROOM_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


class BadInput(Exception):
    """A sweep file, dataset, results directory or argument that cannot be used as given."""

    def report(self) -> str:
        return f"didray: {self}"


def no_room(err: BaseException) -> tuple[str, OSError] | None:
    """(what ran out, the OSError) where `err` or anything it wraps is a write that found no
    room; None otherwise. Ray re-raises a task's error as a RayTaskError keeping it as
    `cause`; Tune, pyarrow and Python chain it as __cause__ or __context__."""
    todo, seen = [err], set()
    while todo:
        if id(err := todo.pop()) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, OSError):
            text = NO_ROOM_TEXT.search(str(err))
            code = err.errno if err.errno in NO_ROOM else int(text.group(1)) if text else None
            if code in NO_ROOM:
                return NO_ROOM[code], err
        todo += [e for e in (err.__cause__, err.__context__, getattr(err, "cause", None))
                 if isinstance(e, BaseException)]
    return None


class NoRoom(BadInput):
    """A sweep stopped because a write found no room: what to free, and how to continue."""

    def __init__(self, what: str, err: OSError, storage: str, again: str):
        where = f" ({err.filename})" if err.filename else ""
        super().__init__(
            f"{what}: a write failed{where} while the sweep wrote to {storage}. What was "
            "written before stays intact: every table, manifest, cache entry and checkpoint "
            "is swapped in whole, so none is half-written. Free space there (the shared "
            f"cache {storage}/cache/ is rebuilt where needed; the tune*/ checkpoints of sweeps "
            "you no longer resume; Ray's session logs under /tmp/ray), or raise the limit, "
            f"then continue with `{again}`")
