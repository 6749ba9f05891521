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

TAG_KEYS = ("sweep", "trial", "beta", "regime")

# gauge name -> (description, the metric keys it is read from, first present wins).
# The first key is the one the Train worker reports (TRL's names); the second a plain alias.
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "didray_loss": ("DPO loss (mean over the last logged batch)", ("loss",)),
    "didray_reward_margin": ("mean implicit reward margin chosen - rejected",
                             ("rewards/margins", "reward_margin")),
    "didray_reward_accuracy": ("fraction of pairs with chosen reward > rejected",
                               ("rewards/accuracies", "reward_accuracy")),
    "didray_did_entropy": ("DID entropy H(q_{pi_theta/pi_ref}) in nats",
                           ("did/entropy", "did_entropy")),
    "didray_tokens_per_s": ("training throughput, tokens per second",
                            ("tokens_per_s", "perf/tokens_per_s")),
    "didray_step": ("last reported optimizer step", ("step",)),
}

_gauges: dict = {}  # gauge name -> ray.util.metrics.Gauge, filled on first use in a process


def _gauge(name: str):
    if name not in _gauges:
        from ray.util.metrics import Gauge  # Ray: a custom metric, exported by the node agent

        _gauges[name] = Gauge(name, description=GAUGES[name][0], tag_keys=TAG_KEYS)
    return _gauges[name]


def _value(metrics: dict, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if math.isfinite(value) else None
        if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
            value = float(value.item())
            return value if math.isfinite(value) else None
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
    for name, (_, keys) in GAUGES.items():
        value = _value(metrics, keys)
        if value is not None:
            _gauge(name).set(value, tags=tag_values)
