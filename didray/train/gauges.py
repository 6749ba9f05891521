"""Per-step training metrics as Ray custom metrics (Prometheus gauges).

Ray exports them from every node's metrics agent (`ray.nodes()[i]["MetricsExportPort"]`,
`/metrics`), so they show in the dashboard's Metrics view (when Grafana/Prometheus are set
up, see cluster/README.md) and in any Prometheus that scrapes the cluster. Each series is
tagged with the sweep, trial, beta and regime, e.g.

    didray_loss{sweep="toy",trial="a1b2c3d4_00000",beta="0.1",regime="pg",...} 0.52

Gauges are created once per process, on first use, because Ray registers a metric by name
per worker process; creating them at import time would run before `ray.init`.
"""

from __future__ import annotations

import math

from didray.metrics import REGISTRY

TAG_KEYS = ("sweep", "trial", "beta", "regime")

# gauge name -> the registered metric it shows (its meaning becomes the gauge's description)
GAUGES: dict[str, str] = {
    "didray_loss": "loss",
    "didray_reward_margin": "rewards/margins",
    "didray_reward_accuracy": "rewards/accuracies",
    "didray_did_entropy": "did/entropy",
    "didray_tokens_per_s": "tokens_per_s",
    "didray_step": "step",
}

_gauges: dict = {}  # gauge name -> ray.util.metrics.Gauge, filled on first use in a process


def _gauge(name: str):
    if name not in _gauges:
        from ray.util.metrics import Gauge  # Ray: a custom metric, exported by the node agent

        metric = REGISTRY[GAUGES[name]]
        description = f"{metric.meaning} ({metric.unit})" if metric.unit else metric.meaning
        _gauges[name] = Gauge(name, description=description, tag_keys=TAG_KEYS)
    return _gauges[name]


def _value(value: object) -> float | None:
    """A finite float from a number, a 0-d tensor or a numpy scalar; None otherwise."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def export_step_metrics(metrics: dict, tags: dict) -> None:
    """Set every didray gauge whose metric is in `metrics` (others are left as they were).

    `tags` must give sweep, trial, beta and regime (values are turned into strings); extra
    keys are ignored. Call it from inside Ray (a task, actor or Train worker); outside a
    connected Ray process the values go nowhere.
    """
    missing = [k for k in TAG_KEYS if k not in tags]
    if missing:
        raise ValueError(f"export_step_metrics: missing tag(s) {', '.join(missing)}; "
                         f"give all of {', '.join(TAG_KEYS)}")
    tag_values = {k: str(tags[k]) for k in TAG_KEYS}
    for name, key in GAUGES.items():
        value = _value(metrics.get(key))
        if value is not None:
            _gauge(name).set(value, tags=tag_values)
