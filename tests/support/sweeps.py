"""Running sweeps from tests, and comparing their results with the session's CI sweep.

Every sweep a test launches goes through `run_here` (in this process) or `run_cli` (a
`didray` subprocess with its own Ray); both refuse to run inside a test that is not marked
`slow`, so a heavy test cannot hide in the fast tier (tests/conftest.py marks them).
"""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import psutil
import ray
import yaml

from didray.cli import main
from didray.sweep import RAY_ENV
from support import tiers

ROOT = Path(__file__).parents[2]
CI = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())

# The process that trains a trial: Tune's trial process for one-worker trials (they train
# in it), a Ray Train worker otherwise.
TRAINERS = ("ray::ImplicitFunc", "RayTrainWorker")


def write_sweep(directory: Path, sweep: dict, name: str = "ci.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(sweep))
    return path


def warm(storage: Path, cache: Path) -> Path:
    """`storage` holding a copy of the CI sweep's cache (pi_ref, enumeration, regime data,
    reference log-probs): a sweep over the CI world run there prepares nothing."""
    shutil.copytree(cache, storage / "cache", dirs_exist_ok=True)
    return storage


def run_here(args: list[str]) -> int:
    """`didray` in this process; the embedded Ray it starts is shut down afterwards."""
    tiers.require_slow("runs a sweep")
    try:
        return main(args)
    finally:
        ray.shutdown()


def small_files_in_workers(fsize: int) -> dict:
    """The runtime env of a Ray whose worker processes (a trial's own, not the driver) write
    files of at most `fsize` bytes: a write past it fails with EFBIG, as on a full disk
    (SIGXFSZ ignored, as a shell's `ulimit -f` leaves a process that handles it). A nested
    function: cloudpickle sends it by value, the workers cannot import the tests."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, hard))

    # A copy: Ray adds the hook's key to the env_vars it is given, which a later Ray must not get.
    return {"env_vars": dict(RAY_ENV), "worker_process_setup_hook": limit}


def run_cli(args: list[str], kill_after: str | None = None,
            kill=lambda proc: proc.kill(), stdout: bool = False) -> tuple[int, str, list[str]]:
    """`didray` in a subprocess (its own Ray). Once a line containing `kill_after` is printed,
    `kill(proc)` runs. Returns the exit code, stderr (with stdout in it if `stdout`) and the
    names of the processes it had started that were still alive 10 s after it exited (they
    are killed then)."""
    tiers.require_slow("runs `didray` in a subprocess")
    streams = ({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if stdout
               else {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE})
    proc = subprocess.Popen([sys.executable, "-m", "didray.cli", *args], cwd=ROOT, text=True,
                            **streams)
    lines, family = [], []
    for line in proc.stdout if stdout else proc.stderr:
        lines.append(line)
        if kill_after and kill_after in line:
            family = psutil.Process(proc.pid).children(recursive=True)
            kill(proc)
            kill_after = None
    code = proc.wait(timeout=600)
    _, alive = psutil.wait_procs(family, timeout=10)
    names = [p.name() for p in alive]
    for leftover in alive:  # the killed driver's own Ray processes, nothing else
        leftover.kill()
    return code, "".join(lines), names


def kill_trainer(proc: subprocess.Popen) -> None:
    """kill -9 of the process training the sweep's one trial (a descendant of `proc` only)."""
    trainers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                if any(t in " ".join(p.cmdline()) for t in TRAINERS)]
    assert len(trainers) == 1, trainers
    trainers[0].kill()


KEYS = {"trials": ["beta", "regime"], "steps": ["beta", "regime", "step"],
        "evals": ["beta", "regime", "estimator", "proposal", "prompt_id"]}


def comparable(path: Path, name: str) -> pl.DataFrame:
    """A results table without what legitimately differs between two runs of one sweep."""
    frame = pl.read_parquet(path / f"{name}.parquet")
    drop = [c for c in frame.columns if c in ("trial_id", "node_id", "checkpoint_path", "error")
            or c.endswith("tokens_per_s") or c.startswith("time/")]
    return frame.drop(drop).sort(KEYS[name])


def without_empty(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` less its all-null columns: a table holds a column only if one of its trials
    wrote it (e.g. `optimum_*`, tilted regimes only), so a subset of the CI sweep's trials
    lacks what the whole sweep holds as nulls for them."""
    return frame.select(c for c in frame.columns if frame[c].null_count() < frame.height)


def assert_same_results(out: Path, clean: Path, tables: tuple[str, ...] = tuple(KEYS)
                        ) -> None:
    """Row for row equal to the uninterrupted CI sweep's trials with the same axes."""
    for name in tables:
        keys = KEYS[name]
        got = without_empty(comparable(out, name))
        want = without_empty(comparable(clean, name).join(
            got.select("beta", "regime").unique(), on=["beta", "regime"]).sort(keys))
        assert got.height == want.height > 0, name
        assert sorted(got.columns) == sorted(want.columns), name
        assert got.select(want.columns).equals(want), name


def one_trial_sweep(tmp_path: Path) -> list[str]:
    """`didray run` arguments for the CI sweep cut to its beta 0.1, pg trial, under tmp_path."""
    path = write_sweep(tmp_path, {**CI, "search": {"beta": [0.1], "regime": ["pg"]}})
    return ["run", str(path), "--storage", str(tmp_path)]
