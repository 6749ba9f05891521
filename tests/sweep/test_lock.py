"""One driver per sweep (didray.sweep.lock, design §3.8): a second driver of a running sweep is
refused naming the first, a dead driver's lease is taken over, the lease is gone however the
driver ends, and the interrupt hint continues this very sweep."""

import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time

import polars as pl
import pyarrow.fs as pafs
import pytest
from support.sweeps import one_trial_sweep, run_cli, warm

from didray.errors import BadInput
from didray.storage import Storage
from didray.sweep import lock
from didray.sweep.driver import continue_command
from didray.sweep.lock import LOCK, STALE_AFTER_S, SweepBusy, SweepLock


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lease(sweep_dir, host: str, pid: int, age: float = 0.0) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / LOCK
    path.write_text(json.dumps({"host": host, "pid": pid, "started": 1.7e9, "token": "old"}))
    os.utime(path, (time.time() - age, time.time() - age))


def holding(tmp_path, said: list[str]) -> SweepLock:
    return SweepLock(Storage.of(tmp_path), tmp_path / "ci", said.append)


def test_second_driver_is_refused_naming_the_first(tmp_path):
    with holding(tmp_path, []):
        lease = json.loads((tmp_path / "ci" / LOCK).read_text())
        assert (lease["host"], lease["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(SweepBusy) as refused, holding(tmp_path, []):
            pass
        message = str(refused.value)
        assert f"pid {os.getpid()} on {socket.gethostname()}, running since " in message
        assert time.strftime("%Y-%m-%d %H:%M", time.localtime(lease["started"])) in message
        assert "\n" not in message
        # The refused driver left the first one's lease as it was.
        assert json.loads((tmp_path / "ci" / LOCK).read_text()) == lease
    # Released; the directory held nothing else, so it is gone too.
    assert not (tmp_path / "ci").exists()


def test_lease_of_a_dead_pid_is_taken_over(tmp_path):
    pid = dead_pid()
    write_lease(tmp_path / "ci", socket.gethostname(), pid)
    said = []
    with holding(tmp_path, said):
        assert json.loads((tmp_path / "ci" / LOCK).read_text())["pid"] == os.getpid()
    assert said == [f"lock: taking over the lease of {tmp_path / 'ci'} from pid {pid} on "
                    f"{socket.gethostname()}, running since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(1.7e9))}: "
                    f"pid {pid} is no longer running on this host"]
    assert not (tmp_path / "ci" / LOCK).exists()


def test_other_hosts_lease_holds_until_its_heartbeat_is_stale(tmp_path):
    write_lease(tmp_path / "ci", "elsewhere", 1, age=STALE_AFTER_S / 2)
    with pytest.raises(SweepBusy, match="pid 1 on elsewhere"), holding(tmp_path, []):
        pass
    write_lease(tmp_path / "ci", "elsewhere", 1, age=STALE_AFTER_S + 5)
    said = []
    with holding(tmp_path, said):
        pass
    assert said[0].endswith(f"its heartbeat is {STALE_AFTER_S + 5:.0f} s old "
                            f"(stale after {STALE_AFTER_S:.0f} s)"), said


def test_heartbeat_refreshes_the_lease(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.05)
    with holding(tmp_path, []):
        path = tmp_path / "ci" / LOCK
        os.utime(path, (time.time() - 100, time.time() - 100))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5


def test_released_when_the_block_raises_and_results_stay(tmp_path):
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError), holding(tmp_path, []):
        raise RuntimeError("a failed prepare")
    assert sorted(p.name for p in (tmp_path / "ci").iterdir()) == ["manifest.json"]


def test_a_directory_that_cannot_hold_the_lease_is_one_paragraph(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    storage = Storage.of(tmp_path / "a-file")
    with pytest.raises(BadInput) as refused, SweepLock(storage, storage.local / "ci", [].append):
        pass
    assert str(refused.value).startswith(f"{tmp_path / 'a-file' / 'ci'}: the sweep's lease "
                                         "cannot be written there (")
    assert (tmp_path / "a-file").read_text() == "not a directory"


def test_continue_command_keeps_storage_overrides_and_address():
    command = continue_command("sweeps/ci.yaml", ["train.lr=1e-4", "name=my sweep"],
                               "s3://b/r?endpoint_override=h:9000&scheme=http", "auto")
    assert shlex.split(command) == [
        "didray", "run", "sweeps/ci.yaml", "train.lr=1e-4", "name=my sweep",
        "--storage", "s3://b/r?endpoint_override=h:9000&scheme=http", "--address", "auto",
        "--resume"]


def test_resume_while_running_is_refused_and_the_first_finishes(warm_cache, tmp_path):
    args = one_trial_sweep(warm(tmp_path, warm_cache))
    second = []

    def resume_now(first):
        assert (tmp_path / "ci" / LOCK).is_file()
        second.append((first.pid, run_cli([*args, "--resume"])))

    code, log, _ = run_cli(args, kill_after="ray: running trials", kill=resume_now)
    assert code == 0, log
    [(pid, (refused, message, _))] = second
    assert refused == 2, message
    assert f"is being run by another didray driver (pid {pid} on {socket.gethostname()}, " \
           "running since " in message, message
    trials = pl.read_parquet(tmp_path / "ci" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"] and trials["step"].to_list() == [6]
    assert not (tmp_path / "ci" / LOCK).exists()


def test_remote_lease_refuses_a_driver_on_another_machine(s3, tmp_path, monkeypatch):
    """On a URI storage the lease is copied to the remote: a driver with another mirror (as on
    another machine) finds it there, and it is removed from the remote on release."""
    uri, fs = s3
    first = Storage.of(uri)
    remote = "didray/results/ci/" + LOCK
    with SweepLock(first, first.local / "ci", [].append):
        assert json.loads(fs.open_input_stream(remote).read())["pid"] == os.getpid()
        monkeypatch.setenv("DIDRAY_MIRROR", str(tmp_path / "other-machine"))
        other = Storage.of(uri)
        assert other.local != first.local
        with pytest.raises(SweepBusy, match=r"^s3://didray/results/ci\?endpoint_override=.* "
                                            r"is being run by another didray driver \(pid "), \
                SweepLock(other, other.local / "ci", [].append):
            pass
    assert fs.get_file_info(remote).type == pafs.FileType.NotFound


def test_of_two_remote_leases_written_at_once_the_overwritten_one_steps_back(s3, tmp_path,
                                                                               monkeypatch):
    """A driver on another machine that found no lease writes its own just after this one's
    arrived (pyarrow has no create-if-absent on S3): this driver, its lease overwritten
    while it settles, is refused naming the other, and leaves the other's lease in place."""
    uri, fs = s3
    first = Storage.of(uri)
    remote = "didray/results/ci/" + LOCK
    monkeypatch.setenv("DIDRAY_MIRROR", str(tmp_path / "other-machine"))
    other = SweepLock(Storage.of(uri), Storage.of(uri).local / "ci", [].append)

    def overwrite_once_written() -> None:  # the other driver's push, already under way
        while fs.get_file_info(remote).type == pafs.FileType.NotFound:
            time.sleep(0.01)
        with fs.open_output_stream(remote) as out:
            out.write(other.me.encode())

    racer = threading.Thread(target=overwrite_once_written)
    racer.start()
    try:
        with (pytest.raises(SweepBusy, match=rf"\(pid {os.getpid()} on {socket.gethostname()}"),
              SweepLock(first, first.local / "ci", [].append)):
            pass
    finally:
        racer.join()
    assert json.loads(fs.open_input_stream(remote).read())["token"] == other.me.token
