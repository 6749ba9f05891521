"""The test tiers' reading of test code (support.tiers): which tests start Ray or a sweep; and
the shared helpers' rule."""

from pathlib import Path

import pytest
import ray
from support import tiers
from support.imports import imports

MODULE = '''
import ray
from didray.cli import main
from support.sweeps import run_cli

def helper(tmp_path):
    return run_cli(["run", str(tmp_path)])

def indirect(tmp_path):
    return helper(tmp_path)

def test_through_helpers(tmp_path):
    indirect(tmp_path)

def test_validate_only(tmp_path):
    assert main(["validate", "sweeps/ci.yaml"]) == 0

def test_run_in_process(tmp_path):
    assert main(["run", "sweeps/ci.yaml", "--storage", str(tmp_path)]) == 0

def test_own_ray():
    ray.init(num_cpus=1)

def test_own_head(bin_dir):
    cmd = [str(bin_dir / "ray"), "start", "--head", "--block"]

def test_reads_results(ci_sweep):
    assert ci_sweep[0] == 0
'''


def test_heavy_functions_follow_calls_within_the_module():
    assert tiers.heavy_functions(MODULE) == {
        "helper", "indirect", "test_through_helpers", "test_run_in_process", "test_own_ray",
        "test_own_head"}


def test_the_real_end_to_end_tests_are_read_as_heavy_and_the_contract_tests_are_not():
    sweep_tests = Path(__file__).parent / "sweep"
    heavy = tiers.heavy_functions((sweep_tests / "test_sweep.py").read_text())
    assert {"test_two_ddp_workers_train_one_trial",
            "test_moved_sweep_resumes_in_its_new_place",  # through its helper
            "move_interrupted_sweep"} <= heavy
    assert tiers.heavy_functions((sweep_tests / "test_ci_sweep.py").read_text()) == set()


def test_starting_ray_in_an_unmarked_test_fails_it():
    start = getattr(ray, "init")  # noqa: B009 (hidden from the collection-time reading)
    with pytest.raises(pytest.fail.Exception, match="is not marked slow"):
        start(num_cpus=1)
    assert not ray.is_initialized()


def test_no_test_module_imports_another():
    """Shared helpers live in tests/support: a test module used as a library drags its tests
    and fixtures into the importer (and broke CI once, a `tests.` path CI's pytest lacks)."""
    tests = Path(__file__).parent
    found = {f"{path.relative_to(tests)}: {name}"
             for path in tests.rglob("*.py")
             for name in imports(path.read_text(), path.relative_to(tests.parent))
             if name.rsplit(".", 1)[-1].startswith("test_")}
    assert found == set()
