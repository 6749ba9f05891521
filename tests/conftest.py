"""Session set-up: the shared fixtures (support.fixtures), the test tiers (support.tiers) and a
clean exit."""

import os
import sys

import pytest
import ray
from support import tiers

# Nothing is fetched from a model hub in tests; set before transformers reads it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = ["support.fixtures"]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that starts Ray or a sweep (support.tiers.is_heavy)."""
    for item in items:
        if not item.get_closest_marker("slow") and tiers.is_heavy(item):
            item.add_marker(pytest.mark.slow)


_real_init = ray.init


def _checked_init(*args, **kwargs):
    tiers.require_slow("starts Ray (ray.init)")
    return _real_init(*args, **kwargs)


def pytest_configure(config) -> None:
    # ray.init stays Ray's own; it first checks the running test is allowed to start Ray.
    ray.init = _checked_init


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    tiers.enter(item)
    try:
        return (yield)
    finally:
        tiers.enter(None)


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
