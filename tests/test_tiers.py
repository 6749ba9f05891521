"""The test tiers' reading of test code (support.tiers): which tests start Ray or a sweep."""

import pytest
import ray
from support import tiers

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


def test_a_real_end_to_end_test_is_read_as_heavy_and_a_contract_test_is_not(request):
    from sweep import test_ci_sweep, test_sweep

    assert tiers.starts_ray(test_sweep.test_two_ddp_workers_train_one_trial)
    assert tiers.starts_ray(test_sweep.test_moved_sweep_resumes_in_its_new_place)  # via helper
    assert not tiers.starts_ray(test_ci_sweep.test_steps_start_at_pi_ref)
    assert request.node.get_closest_marker("slow") is None


def test_starting_ray_in_an_unmarked_test_fails_it():
    start = getattr(ray, "init")  # noqa: B009 (hidden from the collection-time reading)
    with pytest.raises(pytest.fail.Exception, match="is not marked slow"):
        start(num_cpus=1)
    assert not ray.is_initialized()
