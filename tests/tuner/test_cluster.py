"""A two-node Ray cluster on this machine (ray.cluster_utils.Cluster) running one search over one store."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tests.tuner.conftest import write_space
from tuner.locks import ActorLock, create_leases
from tuner.search import SearchOptions, run_search


@pytest.fixture
def two_nodes() -> Cluster:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_search_across_two_nodes_shares_one_store(
    two_nodes: Cluster, mlflow_server: str, tiny_data_dir: Path, tmp_path: Path
) -> None:
    """Two trials start together on two nodes with one seed config: one computes it, the other waits
    on the single-flight lock and reuses it."""
    space = write_space(tmp_path, "shared", params={"refine.beta": {"float": [4.0, 16.0]}})
    options = SearchOptions(
        space_files=(str(space),),
        samples=2,
        experiment="cluster-test",
        data=str(tiny_data_dir),
        concurrency=2,
        cpus_per_trial=1,
        address=two_nodes.address,
        storage=str(tmp_path / "storage"),
        tracking_uri=mlflow_server,
        cache_dir=str(tmp_path / "cache"),
        reduction_factor=100,
    )
    run_search(options)
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("cluster-test")
    children = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert len({c.data.tags["wsss.node"] for c in children}) == 2  # one trial on each node
    seed_attempts = [p for p in (tmp_path / "storage" / "store" / "seed").glob("*/*") if p.is_dir()]
    assert len(seed_attempts) == 1
    assert sorted(c.data.metrics["seed_cached"] for c in children) == [0.0, 1.0]


def test_actor_lock_is_exclusive_and_lapses_when_the_holder_stops_renewing() -> None:
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        leases = create_leases("test-leases")
        lock = ActorLock("test-leases", ttl=2.0, poll=0.05)
        inside, overlaps = [], []

        def hold(n: int) -> None:
            with lock("seed", "k"):
                overlaps.append(len(inside))
                inside.append(n)
                time.sleep(0.2)
                inside.remove(n)

        threads = [threading.Thread(target=hold, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert overlaps == [0, 0, 0]

        assert ray.get(leases.acquire.remote("seed/dead", "crashed-trial", 0.5))  # never renewed nor released
        start = time.monotonic()
        with lock("seed", "dead"):
            waited = time.monotonic() - start
        assert 0.3 < waited < 5
    finally:
        ray.shutdown()
