"""A sweep's search space: its grid points, and Tune's param_space for the grid, a random
search or the new points of an extension (`didray.sweep.state.extension`)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

from didray.config.schema import Sweep


def search_axes(sweep: Sweep) -> dict:
    """beta, regime, seed and every train.* / eval.* axis by its dotted path: a list of values
    each, or (random mode) a distribution."""
    s = sweep.search
    return {"beta": s.beta, "regime": sweep.regime_names(), "seed": s.seed, **s.axes}


def search_space(sweep: Sweep) -> dict:
    """Tune's param_space. Grid mode crosses the lists; random mode draws each list with
    tune.choice and each distribution with its Tune sampler."""
    from ray import tune

    pick = tune.grid_search if sweep.search.mode == "grid" else tune.choice
    samplers = {"loguniform": tune.loguniform, "uniform": tune.uniform}
    return {path: pick(axis) if isinstance(axis, list) else
            samplers[axis.kind](*axis.values) if axis.kind in samplers else
            tune.choice(axis.values)
            for path, axis in search_axes(sweep).items()}


def grid_points(sweep: Sweep) -> list[dict]:
    """Every search point of a grid sweep, as Tune's config of its trial."""
    axes = search_axes(sweep)
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def points_space(points: Sequence[dict]) -> dict:
    """Tune's param_space for a list of search points (an extension's new ones): a grid over
    their indices, each axis read from the indexed point, so trial configs hold the same axes
    as the base grid's (plus `point`)."""
    from ray import tune

    return {"point": tune.grid_search(list(range(len(points)))),
            **{axis: tune.sample_from(lambda config, axis=axis: points[config["point"]][axis])
               for axis in points[0]}}


def point_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)
