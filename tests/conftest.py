"""Shared fixtures. `ci_sweep` runs sweeps/ci.yaml once per session on a real local Ray."""

from pathlib import Path

import pytest
import ray

from didray.cli import main

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def ci_sweep(tmp_path_factory) -> tuple[int, Path]:
    """(exit code, results directory) of `didray run sweeps/ci.yaml`, run in this process.

    Ray is stopped afterwards (only the instance this fixture started)."""
    storage = tmp_path_factory.mktemp("ci")
    try:
        code = main(["run", str(ROOT / "sweeps/ci.yaml"), "--storage", str(storage)])
    finally:
        ray.shutdown()
    return code, storage / "ci"
