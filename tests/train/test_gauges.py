"""didray's per-step gauges reach the node's Prometheus export inside a real local Ray."""

from __future__ import annotations

import time
import urllib.request

import pytest
import ray

from didray.train.gauges import GAUGES, export_step_metrics

TAGS = {"sweep": "metrics-test", "trial": "abc_00001", "beta": 0.1, "regime": "pg"}


@pytest.fixture(scope="module")
def local_ray():
    # Metrics are pushed to the node's agent every metrics_report_interval_ms (10 s by
    # default); 500 ms keeps the test short.
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING",
             _system_config={"metrics_report_interval_ms": 500})
    yield
    ray.shutdown()


@ray.remote(num_cpus=0.1)
def report(metrics: dict, tags: dict) -> None:
    export_step_metrics(metrics, tags)


def scrape_until(needle: str, timeout_s: float = 30.0) -> str:
    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            text = ""
        if needle in text:
            return text
        time.sleep(0.5)
    raise AssertionError(f"{needle!r} not in {url} after {timeout_s} s")


def test_step_metrics_reach_prometheus(local_ray):
    metrics = {"loss": 0.625, "rewards/margins": 1.5, "did/entropy": 2.25, "tokens_per_s": 640,
               "step": 4, "rewards/accuracies": 0.75, "node_id": "ignored"}
    ray.get(report.remote(metrics, TAGS))
    # Ray prefixes custom metrics with "ray_" on the Prometheus endpoint.
    for name in GAUGES:  # exported in one batch, usually; each is waited for anyway
        text = scrape_until(f"ray_{name}{{")
    lines = {line.split("{")[0]: line for line in text.splitlines()
             if line.startswith("ray_didray_") and 'trial="abc_00001"' in line}
    expected = {"ray_didray_loss": 0.625, "ray_didray_reward_margin": 1.5,
                "ray_didray_did_entropy": 2.25, "ray_didray_tokens_per_s": 640.0,
                "ray_didray_step": 4.0, "ray_didray_reward_accuracy": 0.75}
    assert set(expected) == {f"ray_{name}" for name in GAUGES}
    for name, value in expected.items():
        assert name in lines, name
        assert float(lines[name].rsplit(" ", 1)[1]) == value
        assert 'beta="0.1"' in lines[name] and 'regime="pg"' in lines[name]


def test_missing_tags_are_an_error():
    with pytest.raises(ValueError, match="trial, beta"):
        export_step_metrics({"loss": 1.0}, {"sweep": "s", "regime": "pg"})


def test_nothing_to_export_creates_no_gauge():
    from didray.train import gauges as module

    before = dict(module._gauges)
    export_step_metrics({"step_time": 1.0, "loss": float("nan")}, TAGS)
    assert module._gauges == before
