"""A sweep on a three-node Ray cluster on one machine (ray.cluster_utils.Cluster)."""

import contextlib
import threading
import time

import polars as pl
import psutil
import pytest
import ray
from ray.cluster_utils import Cluster
from support.sweeps import CI, TRAINERS, assert_same_results, warm, write_sweep

from didray.analysis import entropy_vs_scores, load
from didray.cli import main


@pytest.fixture
def nodes():
    """A CPU-less head and two worker nodes with one CPU each: a trial fits on one node only."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_nodes_and_land_in_shared_storage(nodes, warm_cache, tmp_path):
    # Trials long enough (a few seconds) that both run at once: a 6-step trial can end
    # before the other node's trial process has started, and Tune then reuses the first
    # node's process for the second trial (seen once, after the evaluation got fast).
    path = write_sweep(tmp_path, {
        **CI, "name": "multi", "search": {"beta": [0.1, 0.5], "regime": ["pg"]},
        "train": {**CI["train"], "steps": 300, "report_every": 150, "checkpoint_every": 150},
        "scaling": {**CI["scaling"], "max_concurrent_trials": 2}}, name="multi.yaml")
    # main, not run_here: the test reads the cluster's nodes after the sweep.
    assert main(["run", str(path), "--storage", str(warm(tmp_path, warm_cache)),
                 "--address", nodes.address]) == 0

    trials = pl.read_parquet(tmp_path / "multi" / "trials.parquet")
    assert trials["status"].to_list() == ["TERMINATED"] * 2
    worker_nodes = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("CPU")}
    assert set(trials["node_id"]) == worker_nodes  # one trial on each worker node
    table = entropy_vs_scores(load(tmp_path / "multi"))
    assert table["finished"].sum() == 2


def train_worker_node(cluster):
    """The node of `cluster` whose raylet runs the process training the sweep's trial."""
    while True:
        for node in cluster.list_all_nodes():
            with contextlib.suppress(psutil.Error):  # processes come and go meanwhile
                raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
                if any(t in " ".join(p.cmdline()) for t in TRAINERS
                       for p in raylet.children(recursive=True)):
                    return node
        time.sleep(0.5)


def test_a_lost_node_costs_a_restart_not_the_sweep(ci_sweep, warm_cache, nodes, tmp_path):
    """The node training the only trial is removed once it has checkpointed step 2: the trial
    resumes on the other node by itself and ends with the uninterrupted run's results."""
    _, clean = ci_sweep
    path = write_sweep(tmp_path, {**CI, "search": {"beta": [0.1], "regime": ["pg"]}})
    out = tmp_path / "ci"

    def remove_after_first_checkpoint() -> None:
        node = train_worker_node(nodes)
        while not list(out.glob("t*/*/checkpoint_*")):  # train/ or tune/, by trial kind
            time.sleep(0.2)
        nodes.remove_node(node)

    killer = threading.Thread(target=remove_after_first_checkpoint, daemon=True)
    ray.init(address=nodes.address)
    killer.start()
    assert main(["run", str(path), "--storage", str(warm(tmp_path, warm_cache)),
                 "--address", nodes.address]) == 0
    killer.join(timeout=5)
    assert len([n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")]) == 1
    assert_same_results(out, clean)
