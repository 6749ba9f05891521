"""A sweep on a three-node Ray cluster on one machine (ray.cluster_utils.Cluster)."""

from pathlib import Path

import polars as pl
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from didray.analysis import entropy_vs_scores, load
from didray.cli import main

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def cluster():
    """A CPU-less head and two worker nodes with one CPU each: a trial fits on one node only."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_nodes_and_land_in_shared_storage(cluster, tmp_path):
    sweep = yaml.safe_load((ROOT / "sweeps/ci.yaml").read_text())
    sweep.update(name="multi", search={"beta": [0.1, 0.5], "regime": ["pg"]})
    sweep["scaling"]["max_concurrent_trials"] = 2
    path = tmp_path / "multi.yaml"
    path.write_text(yaml.safe_dump(sweep))

    assert main(["run", str(path), "--storage", str(tmp_path), "--address",
                 cluster.address]) == 0

    trials = pl.read_parquet(tmp_path / "multi" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"] * 2
    worker_nodes = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("CPU")}
    assert set(trials["node_id"]) == worker_nodes  # one trial on each worker node
    table = entropy_vs_scores(load(tmp_path / "multi"))
    assert table["finished"].sum() == 2
