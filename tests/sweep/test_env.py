"""Environment failures end in one paragraph and exit 2, never a traceback (docs/design.md
§3.3), table-driven: each case sets up real directories or a real file size limit, runs the
CLI and expects its exit code, the words of its message, and the files it found left as they
were. Every case is refused or fails before Ray starts (the tier guard on ray.init fails the
test otherwise).

Permissions do not stop root: as root the CLI runs with the effective user nobody (the real
one stays root, so the test takes root back after)."""

# What the commands import when they run, imported here: nobody cannot read Python's own
# library under /root (email.policy: what `didray --version` reads the metadata with).
import email.policy  # noqa: F401
import errno
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from ray.exceptions import RayTaskError
from ray.tune.error import TuneError
from safetensors.torch import save_file
from support.sweeps import (
    assert_same_results,
    one_trial_sweep,
    run_here,
    small_files_in_workers,
    warm,
)

import didray.analysis  # noqa: F401
import didray.examples  # noqa: F401
import didray.preflight  # noqa: F401
import didray.sweep.driver  # noqa: F401
from didray.cli import main
from didray.errors import no_room
from didray.sweep import state

CI = Path(__file__).parents[2] / "sweeps/ci.yaml"
NOBODY = 65534


@contextmanager
def unprivileged(fsize: int) -> Iterator[None]:
    """Nobody's effective uid where the test runs as root, and files of at most `fsize` bytes
    (-1: no limit): a write past it fails with EFBIG (SIGXFSZ ignored, as a shell's
    `ulimit -f` leaves a Python process that handles it)."""
    root = os.geteuid() == 0
    if root and (closed := closed_to_others(Path(sys.prefix), Path(__file__))):
        pytest.skip(f"{closed} lets no other user in (a checkout in a `mktemp -d`), so user "
                    "nobody cannot import didray or read its packages' metadata: the cases "
                    "that need an unprivileged user run where the checkout and venv are open")
    limits, handler = resource.getrlimit(resource.RLIMIT_FSIZE), None
    if fsize >= 0:
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, limits[1]))
    if root:
        os.seteuid(NOBODY)
    try:
        yield
    finally:
        if root:
            os.seteuid(0)
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        if handler is not None:
            signal.signal(signal.SIGXFSZ, handler)


def closed_to_others(*paths: Path) -> Path | None:
    """The first directory above `paths` that users other than its owner cannot enter."""
    for path in paths:
        for directory in path.resolve().parents:
            if not directory.stat().st_mode & stat.S_IXOTH:
                return directory
    return None


@pytest.fixture
def place():
    """A directory the CLI's user owns, which that user (nobody, as root) can reach: pytest's
    tmp_path lies under a directory only its owner can enter."""
    where = Path(tempfile.mkdtemp(prefix="didray-env-"))
    os.chmod(where, 0o755)
    if os.getuid() == 0:
        os.chown(where, NOBODY, NOBODY)
    yield where
    subprocess.run(["chmod", "-R", "u+w", str(where)], check=True)
    shutil.rmtree(where)


def give(path: Path) -> None:
    """`path` and everything under it made the CLI user's (what the user would have written)."""
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(path)], check=True)


def read_only(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    give(path)
    subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    return path


def finished_sweep(place: Path) -> Path:
    """A results directory as a finished CI sweep leaves it (the files Tune and didray wrote,
    their content immaterial: it is refused before any is read), made read-only."""
    sweep = place / "results" / "ci"
    for name, data in [("manifest.json", b"{}"), ("trials.parquet", b"PAR1"),
                       ("tune/tuner.pkl", b"\x80\x04N."), ("tune/experiment_state-x.json", b"{}")]:
        (sweep / name).parent.mkdir(parents=True, exist_ok=True)
        (sweep / name).write_bytes(data)
    return read_only(place / "results")


def below_a_file(place: Path) -> Path:
    (place / "a-file").write_text("not a directory")
    return place / "a-file" / "results"


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*"))}


# Each case: the set-up of `place` (returns the storage), the command and its flags, the file
# size limit, the exit code and the words of the message ({storage}, {place} filled in).
CASES: dict[str, tuple[Callable[[Path], Path], list[str], int, int, list[str]]] = {
    "validate: a read-only storage": (
        lambda p: read_only(p / "results"), ["validate"], -1, 2,
        ["{storage}/ci: {storage} is not writable by this user (mode dr-xr-xr-x)",
         "`chmod -R u+w {storage}/ci`", "(nothing was changed)"]),
    "validate: a storage below a file": (
        below_a_file, ["validate"], -1, 2,
        ["{storage}/ci: {place}/a-file is a file, not a directory"]),
    "run: a read-only storage": (
        lambda p: read_only(p / "results"), ["run"], -1, 2,
        ["{storage}/ci: {storage} is not writable by this user", "give another `storage`"]),
    "run --resume: a finished sweep made read-only": (
        finished_sweep, ["run", "--resume"], -1, 2,
        ["{storage}/ci: {storage}/ci is not writable by this user (mode dr-xr-xr-x)",
         "also to resume or extend a finished sweep", "`chmod -R u+w {storage}/ci`"]),
    "run: no room for a file (ulimit -f)": (
        lambda p: p / "results", ["run"], 0, 2,
        ["didray: a file size limit (ulimit -f) was reached, or the disk is full: a write "
         "failed", "while the sweep wrote to {storage}. What was written before stays intact",
         "the shared cache {storage}/cache/", "then continue with `didray run"]),
}


@pytest.mark.parametrize("case", CASES)
def test_an_environment_failure_is_one_paragraph(case, place, capsys):
    set_up, (command, *flags), fsize, code, words = CASES[case]
    storage = set_up(place)
    # The sweep file where nobody can read it: the checkout may lie below a directory only
    # its owner can enter (a mktemp -d clone).
    sweep_file = Path(shutil.copy(CI, place / "ci.yaml"))
    before = snapshot(place)
    with unprivileged(fsize):
        got = main([command, str(sweep_file), f"storage={storage}", *flags])
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for word in words:
        assert word.format(storage=storage, place=place) in err, err
    assert snapshot(place) == before  # nothing written, nothing changed


def test_a_sweep_file_it_cannot_reach_is_one_line(place, capsys):
    """A sweep file below a directory the user cannot enter: the loader's one line, exit 2
    (Path.exists raised PermissionError out of the example-name lookup before)."""
    locked = place / "locked"
    locked.mkdir()
    shutil.copy(CI, locked / "ci.yaml")
    locked.chmod(0)
    try:
        with unprivileged(-1):
            got = main(["validate", str(locked / "ci.yaml")])
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err
    assert got == 2, err
    assert f"{locked / 'ci.yaml'}" in err and "cannot read: Permission denied" in err, err


def no_space() -> OSError:
    """The error of a real Parquet write to a full device (pyarrow's own, errno in its text
    too). Into an open file: given the path, pyarrow deletes what it failed to write."""
    try:
        with pa.OSFile("/dev/full", "wb") as full:
            pq.write_table(pa.table({"x": list(range(100_000))}), full)
    except OSError as err:
        return err
    raise AssertionError("/dev/full took the write")


def wrapped(err: OSError, how: str) -> BaseException:
    """`err` as the driver receives it from Ray, Tune or a reader that failed after it."""
    if how == "ray":
        return RayTaskError("write", "Traceback ...", err).as_instanceof_cause()
    try:
        try:
            raise err
        except OSError as cause:
            if how == "tune":
                raise TuneError("the trial callback failed") from cause
            raise OSError("Couldn't deserialize thrift: Invalid thrift: transport error")  # noqa: B904
    except (TuneError, OSError) as outer:
        return outer


@pytest.mark.parametrize("how", ["ray", "tune", "thrift"])
def test_a_full_disk_is_recognised_however_wrapped(how):
    found = no_room(wrapped(no_space(), how))
    assert found is not None and found[0] == "the disk is full"
    assert found[1].errno == errno.ENOSPC
    assert no_room(wrapped(PermissionError(errno.EACCES, "denied"), how)) is None


def test_a_checkpoint_past_a_file_size_limit_is_recognised(place):
    """safetensors (Rust) says EFBIG only in its text, "(os error 27)": a trial's checkpoint
    write past `ulimit -f`, as the driver finds it in the trial's error (Ray's wrapping)."""
    with unprivileged(1000):
        try:
            save_file({"w": torch.zeros(1000)}, str(place / "model.safetensors"))
        except Exception as err:  # noqa: BLE001 - SafetensorError is no OSError
            failed = err
    found = no_room(RayTaskError("run_trial", "Traceback ...", failed).as_instanceof_cause())
    assert found is not None and found[0].startswith("a file size limit (ulimit -f)")
    assert "(os error 27)" in str(found[1])


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# Damage done to a copy of the CI sweep's Tune state, and the file the message names.
TUNE_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "random bytes in tuner.pkl": (
        lambda tune: (tune / "tuner.pkl").write_bytes(random.Random(0).randbytes(2459)),
        "tuner.pkl cannot be read ("),
    "a truncated experiment state": (
        lambda tune: cut(max(tune.glob("experiment_state-*.json"))), "experiment_state-"),
    "the experiment state deleted": (
        lambda tune: max(tune.glob("experiment_state-*.json")).unlink(),
        "holds no experiment_state-*.json"),
}


@pytest.mark.parametrize("damage", TUNE_DAMAGE)
def test_damaged_tune_state_is_refused_before_ray_starts(damage, ci_sweep, tmp_path, capsys):
    """A copy of the finished CI sweep, its Tune state damaged: --resume refuses it in one
    paragraph (exit 2) and changes nothing; no experiment is started in tune/."""
    sweep_dir = tmp_path / "ci"
    shutil.copytree(ci_sweep[1], sweep_dir)
    assert ci_sweep[0] == 0 and state.tune_damage(sweep_dir / "tune") is None  # intact: reads
    harm, named = TUNE_DAMAGE[damage]
    harm(sweep_dir / "tune")
    before = snapshot(tmp_path)
    assert run_here(["run", str(CI), "--storage", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert f"didray: {sweep_dir / 'tune'}" in err and named in err, err
    assert f"finished trials' results in {sweep_dir} (trials.parquet" in err
    assert f"Restore {sweep_dir / 'tune'} from a copy" in err and "another `name`" in err
    assert snapshot(tmp_path) == before  # nothing written: no run recorded, no experiment


def test_a_trial_that_finds_no_room_ends_the_run_in_one_paragraph(ci_sweep, warm_cache,
                                                                     tmp_path, capsys):
    """A trial's checkpoint write past a file size limit in its own process (its model is
    343 kB; the driver has no limit) ends `didray run` with the driver's disk-full paragraph
    and exit 2, not as a failed trial (exit 1); the run is recorded, and --resume with room
    again finishes the trial equal to the clean run's."""
    args = [*one_trial_sweep(warm(tmp_path, warm_cache)), "train.max_failures=0"]
    ray.init(runtime_env=small_files_in_workers(100_000))  # the driver joins this Ray
    assert run_here(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("didray: a file size limit (ulimit -f) was reached, or the disk "
                          "is full: a write failed while the sweep wrote to"), err
    assert err.endswith(f"then continue with `didray run {args[1]} train.max_failures=0 "
                        f"--storage {tmp_path} --resume`"), err
    assert (run := state.read_manifest(tmp_path / "ci").runs[-1]).errors == 1
    assert run.status == "finished"  # recorded: it ended, one trial errored
    assert run_here([*args, "--resume"]) == 0
    assert_same_results(tmp_path / "ci", ci_sweep[1])
