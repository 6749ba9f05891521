"""The one exception type for bad user input: the CLI prints `report()` and exits with code 2;
and the one environment failure recognised however it arrives: a full disk."""

import errno
import re

# What a write that found no room raises; a file size limit (ulimit -f) reads the same to
# whoever wrote the file.
NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EFBIG: "a file size limit (ulimit -f) was reached, or the disk is full"}
# pyarrow's errors carry the errno only in their text ("Detail: [errno 28] No space ..."),
# Rust's as "(os error 28)": safetensors' SafetensorError, which a trial's checkpoint raises.
NO_ROOM_TEXT = re.compile(r"\[errno (\d+)\]|\(os error (\d+)\)", re.IGNORECASE)


class BadInput(Exception):
    """A sweep file, dataset, results directory or argument that cannot be used as given."""

    def report(self) -> str:
        return f"didray: {self}"


def no_room(err: BaseException) -> tuple[str, BaseException] | None:
    """(what ran out, the error saying so) where `err` or anything it wraps is a write that
    found no room; None otherwise. An OSError's own errno first (it names the file), then
    one in an error's text: a RayTaskError's traceback, pyarrow's and Rust's messages."""
    found = chain(err)
    for each in found:
        if isinstance(each, OSError) and each.errno in NO_ROOM:
            return NO_ROOM[each.errno], each
    for each in found:
        codes = {int(a or b) for a, b in NO_ROOM_TEXT.findall(str(each))} & NO_ROOM.keys()
        if codes:
            return NO_ROOM[min(codes)], each
    return None


def chain(err: BaseException) -> list[BaseException]:
    """`err` and every error it wraps. Ray re-raises a task's error as a RayTaskError keeping
    it as `cause`; Tune, pyarrow and Python chain it as __cause__ or __context__."""
    todo, seen = [err], {}
    while todo:
        if id(err := todo.pop()) in seen:
            continue
        seen[id(err)] = err
        todo += [e for e in (err.__cause__, err.__context__, getattr(err, "cause", None))
                 if isinstance(e, BaseException)]
    return list(seen.values())


class NoRoom(BadInput):
    """A sweep stopped because a write found no room: what to free, and how to continue."""

    def __init__(self, what: str, err: BaseException, storage: str, again: str):
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        super().__init__(
            f"{what}: a write failed{where} while the sweep wrote to {storage}. What was "
            "written before stays intact: every table, manifest, cache entry and checkpoint "
            "is swapped in whole, so none is half-written. Free space there (the shared "
            f"cache {storage}/cache/ is rebuilt where needed; the tune*/ checkpoints of sweeps "
            "you no longer resume; Ray's session logs under /tmp/ray), or raise the limit, "
            f"then continue with `{again}`")
