"""One driver per sweep: a lease file, `driver.lock`, in the sweep's directory (docs/design.md
§3.8). Two drivers of one sweep (a `--resume` started while the first still trains) would run
every trial twice into one tune/ directory.

The lease names its holder (host, pid, start time); its modification time is the heartbeat,
refreshed every HEARTBEAT_S by a daemon thread. It is created by a hard link of a complete
file, so creation is atomic and a reader never sees it half-written. A lease is stale, and
taken over, when its pid is not running on this host, or when its heartbeat is older than
STALE_AFTER_S (the only sign of life of a driver on another host sharing the directory).

On a URI storage the lease is held on this machine's mirror and copied to the same path on the
remote, where other machines' drivers look for it. An object store has no create-if-absent:
each driver writes its lease (a unique token in it), waits SETTLE_S and reads it back; the one
whose lease was overwritten steps back. Two drivers pass together only if one took longer
than SETTLE_S between finding no lease and writing its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from didray.errors import BadInput, no_room
from didray.storage import Storage

LOCK = "driver.lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0
# How long a driver waits after writing a remote lease before reading it back: a lease
# another driver had under way (it read the remote before this one's arrived) lands within.
SETTLE_S = 1.0


class SweepBusy(BadInput):
    """Another driver holds the sweep's lease."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float
    token: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), time.time(), uuid.uuid4().hex)

    @classmethod
    def parse(cls, data: bytes) -> Holder:
        """The holder a lease names; one that cannot be read (written by hand, damaged) names
        an unknown host, so only its heartbeat can make it stale."""
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return cls("an unknown host", 0, 0.0, "")

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, running since {since}"


def pid_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def stale(holder: Holder, age: float) -> str | None:
    """Why the lease of `holder`, its heartbeat `age` seconds old, no longer holds, or None."""
    if age > STALE_AFTER_S:
        return f"its heartbeat is {age:.0f} s old (stale after {STALE_AFTER_S:.0f} s)"
    if holder.host == socket.gethostname() and not pid_running(holder.pid):
        return f"pid {holder.pid} is no longer running on this host"
    return None


def link_new(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` unless it exists; returns whether it was created."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.write(fd, data)
        os.close(fd)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def read_lease(path: Path) -> tuple[bytes, float] | None:
    """(content, heartbeat age in seconds) of the lease at `path`, None if there is none."""
    try:
        with path.open("rb") as f:
            return f.read(), time.time() - os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None


def remove_stale(path: Path, data: bytes) -> None:
    """Remove the stale lease `data` at `path`. Moved aside first: if another driver took it
    over meanwhile, the moved file is that driver's fresh lease, and it is put back."""
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if aside.read_bytes() != data:
        with contextlib.suppress(FileExistsError):  # a third driver got in: it holds it
            os.link(aside, path)
    aside.unlink()


def busy(where: str, holder: Holder, age: float) -> SweepBusy:
    return SweepBusy(
        f"{where} is being run by another didray driver ({holder.describe()}, last heartbeat "
        f"{age:.0f} s ago): two drivers of one sweep would run every trial twice. Wait for it "
        f"to finish, or stop it (Ctrl-C, or kill {holder.pid} on {holder.host}) and continue "
        f"with --resume; a lease whose driver died is taken over once its pid is gone (same "
        f"host) or its heartbeat is {STALE_AFTER_S:.0f} s old (nothing was started)")


class SweepLock:
    """The lease of `sweep_dir` on `storage`, held inside a `with` block: taken on entry
    (SweepBusy if a live driver holds it), released on every exit."""

    def __init__(self, storage: Storage, sweep_dir: Path, say: Callable[[str], None]):
        self.storage, self.path, self.say = storage, sweep_dir / LOCK, say
        self.me = Holder.me()
        self._stop = threading.Event()

    def __enter__(self) -> SweepLock:
        # The directories made for the lease, deepest first: removed again if the run writes
        # nothing into them (a refused or failed new sweep leaves nothing behind).
        self._made = [d for d in (self.path.parent, *self.path.parent.parents)
                      if not d.exists()]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_local()
        except OSError as err:
            self._remove_made()  # nothing of this driver is left behind
            if no_room(err):
                raise  # a full disk is said as such, with what to free (didray.cli)
            raise BadInput(f"{self.path.parent}: the sweep's lease cannot be written there "
                           f"({err.strerror or err}): a sweep's directory must be writable, "
                           "also to resume or extend it (nothing was started)") from None
        try:
            self._take_remote()
        except BaseException:
            self._release()
            raise
        threading.Thread(target=self._beat, name="didray-lease", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._release()

    def _take_local(self) -> None:
        for _ in range(5):
            if link_new(self.path, self.me.encode()):
                return
            if (lease := read_lease(self.path)) is not None:
                self._judge(*lease, where=str(self.path.parent))
                remove_stale(self.path, lease[0])
        raise SweepBusy(f"{self.path}: other drivers keep taking and releasing this sweep's "
                        "lease; run one driver at a time (nothing was started)")

    def _judge(self, data: bytes, age: float, where: str) -> None:
        """Raise SweepBusy for a live holder's lease; say so when taking over a stale one."""
        holder = Holder.parse(data)
        reason = stale(holder, age)
        if reason is None:
            raise busy(where, holder, age)
        self.say(f"lock: taking over the lease of {where} from {holder.describe()}: {reason}")

    def _take_remote(self) -> None:
        if not self.storage.remote:
            return
        where = self.storage.uri_of(self.storage.fs_path(self.path.parent))
        lease = self.storage.read_remote(self.path)
        if lease is not None and Holder.parse(lease[0]).token != self.me.token:
            self._judge(*lease, where=where)
        self.storage.push(self.path)
        # Read back once a lease another driver had under way has landed: of two drivers
        # that wrote at once, the one whose lease was overwritten steps back.
        time.sleep(SETTLE_S)
        lease = self.storage.read_remote(self.path)
        if lease is not None and Holder.parse(lease[0]).token != self.me.token:
            raise busy(where, Holder.parse(lease[0]), lease[1])

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
                self.storage.push(self.path)
            except OSError:
                pass  # a missed heartbeat is retried; STALE_AFTER_S spans many of them

    def _release(self) -> None:
        """Remove the lease where it is still this driver's, and the directories made for it
        that hold nothing else."""
        mine = self.me.encode()
        if self.storage.remote:
            lease = self.storage.read_remote(self.path)
            if lease is not None and lease[0] == mine:
                self.storage.delete(self.path)
        lease = read_lease(self.path)
        if lease is not None and lease[0] == mine:
            self.path.unlink()
        self._remove_made()

    def _remove_made(self) -> None:
        for made in self._made:
            with contextlib.suppress(OSError):  # it holds results
                made.rmdir()
