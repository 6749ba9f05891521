"""The CI sweep as data, and what parse_sweep says about a variant of it."""

from pathlib import Path

import pytest
import yaml

from didray.config.load import SweepFileError, parse_sweep

CI = yaml.safe_load(Path(__file__).parents[2].joinpath("sweeps/ci.yaml").read_text())


def errors_of(data: dict) -> list[str]:
    with pytest.raises(SweepFileError) as info:
        parse_sweep(data)
    return info.value.errors


def with_(path: str, value, base: dict = CI) -> dict:
    """A copy of `base` (the CI sweep) with one dotted field replaced."""
    data = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    node[last] = value
    return data


def swept(**search) -> dict:
    """The CI sweep with these search keys (axes, mode) added."""
    return {**CI, "search": {**CI["search"], **search}}
