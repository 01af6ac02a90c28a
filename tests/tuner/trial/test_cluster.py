"""A two-node Ray cluster on this machine (ray.cluster_utils.Cluster) running one search over one store."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tests.tuner.helpers import write_space
from tuner.search.driver import run_search
from tuner.search.options import SearchOptions
from tuner.spot import interruption_time, watch
from tuner.trial.locks import ActorLock, KeyLeases, create_leases

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane


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

        # A holder whose renewals fail (the lease actor is gone) learns that it lost the lease.
        with ActorLock("test-leases", ttl=0.6, poll=0.05)("seed", "lost") as lease:
            assert lease.held()
            ray.kill(leases)
            deadline = time.monotonic() + 10
            while lease.held() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not lease.held()
    finally:
        ray.shutdown()


@ray.remote(num_cpus=0)
class StallingLeases(KeyLeases.__ray_actor_class__):  # type: ignore[name-defined,misc]
    """The real lease actor, its next `stalls` renewals answered only after `delay` seconds: an actor
    busy or briefly unreachable, as a head under load or a network blip makes it."""

    def __init__(self) -> None:
        super().__init__()
        self.stalls, self.delay = 0, 0.0

    def stall(self, stalls: int, delay: float) -> None:
        self.stalls, self.delay = stalls, delay

    async def renew(self, key: str, owner: str, ttl: float) -> bool:
        if self.stalls > 0:
            self.stalls -= 1
            await asyncio.sleep(self.delay)
        return super().renew(key, owner, ttl)


def test_a_lease_survives_renewals_that_fail_in_transit_but_not_a_lapse() -> None:
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        leases = StallingLeases.options(name="stalling", max_concurrency=8).remote()
        lock = ActorLock("stalling", ttl=3.0, poll=0.05)
        with lock("seed", "blip") as lease:
            ray.get(leases.stall.remote(1, 2.0))  # one renewal times out (after ttl/3 = 1 s)
            time.sleep(4.5)  # past the first lease's end: only the retried renewal kept it
            assert lease.held()
            assert ray.get(leases.holder.remote("seed/blip")) == lease.owner
        with lock("seed", "outage") as lease:
            ray.get(leases.stall.remote(100, 10.0))  # no renewal gets through before it lapses
            deadline = time.monotonic() + 10
            while lease.held() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not lease.held() and time.monotonic() - (lease.expires - 3.0) < 4.5
    finally:
        ray.shutdown()


class FakeImds:
    """EC2's instance metadata service as far as a spot notice goes (IMDSv2: a token, then
    /latest/meta-data/spot/instance-action, 404 until a reclaim is announced), on loopback."""

    def __init__(self) -> None:
        notice: dict[str, str] = {}
        self.notice = notice

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                ok = (
                    self.path == "/latest/api/token"
                    and "X-aws-ec2-metadata-token-ttl-seconds" in self.headers
                )
                self._answer(200 if ok else 400, b"token-1")

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != "token-1":
                    return self._answer(401, b"")
                if self.path != "/latest/meta-data/spot/instance-action" or not notice:
                    return self._answer(404, b"")
                self._answer(200, json.dumps(notice).encode())

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """No access log on the test's output."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def announce(self, at: float) -> None:
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.notice.update(action="terminate", time=stamp)


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds()
    yield fake
    fake.server.shutdown()


def test_the_notice_is_read_from_the_instance_metadata(imds: FakeImds) -> None:
    assert interruption_time(imds.url) is None  # 404: no reclaim announced
    imds.announce(1_900_000_000)
    assert interruption_time(imds.url) == 1_900_000_000


@pytest.fixture
def head_and_two_workers() -> Cluster:
    """A CPU-less head (the driver and the lease actor) and two one-CPU workers; node deaths are
    noticed within seconds, as on a cluster whose spot nodes are reclaimed."""
    fast_failure = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "_system_config": fast_failure},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _seed_published(store: Path) -> bool:
    return any((store / "seed").glob("*/manifest.json")) if (store / "seed").is_dir() else False


def test_a_reclaimed_spot_trial_is_retried_elsewhere_without_counting_as_a_failure(
    head_and_two_workers: Cluster, mlflow_server: str, tiny_data_dir: Path, tmp_path: Path, imds: FakeImds
) -> None:
    """A spot worker is reclaimed while its trial runs refine, after EC2's notice: the watcher drains
    the node, Tune runs the trial again on the other worker without counting the loss (the search
    allows no failure at all), the retry reuses the published seed stage, and MLflow holds one
    FINISHED run for it."""
    slow_later_stages = {"refine.train.epochs": 30, "segment.train.epochs": 30}  # outlast the notice
    space = write_space(tmp_path, "spot", params={"refine.beta": {"float": [4.0, 16.0]}})
    spec = yaml.safe_load(space.read_text())
    spec["fixed"] |= slow_later_stages
    space.write_text(yaml.safe_dump(spec))
    store = tmp_path / "storage" / "store"
    options = SearchOptions(
        space_files=(str(space),),
        samples=1,
        experiment="spot-test",
        data=str(tiny_data_dir),
        cpus_per_trial=1,
        address=head_and_two_workers.address,
        storage=str(tmp_path / "storage"),
        tracking_uri=mlflow_server,
        cache_dir=str(tmp_path / "cache"),
        max_failures=0,
    )
    client = MlflowClient(mlflow_server)
    removed: list[str] = []

    def reclaim_the_trials_node() -> None:
        deadline = time.monotonic() + 300
        while not _seed_published(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        experiment = client.get_experiment_by_name("spot-test")
        runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
        node_id = runs[0].data.tags["wsss.node"]
        node = next(n for n in head_and_two_workers.worker_nodes if n.node_id == node_id)
        noticed = time.time()
        ends_at = noticed + 3  # EC2 gives two minutes
        imds.announce(ends_at)
        assert watch(head_and_two_workers.address, node_id, imds.url, poll=0.1, margin=2.0) == node_id
        # The drain's deadline: 2 s before the notice's time (whole seconds), at least 1 s from now.
        deadline = max(noticed + 1.0, int(ends_at) - 2.0)
        time.sleep(max(0.0, deadline + 1.0 - time.time()))
        head_and_two_workers.remove_node(node, allow_graceful=False)  # the instance is gone, after it
        removed.append(node_id)

    killer = threading.Thread(target=reclaim_the_trials_node)
    killer.start()
    run_search(options)
    killer.join()
    assert removed
    experiment = client.get_experiment_by_name("spot-test")
    runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    assert len(runs) == 1  # one run for the trial, no FAILED ghost beside the retry
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["wsss.attempt"] == "2"
    assert run.data.tags["wsss.node"] != removed[0]  # the retry ran on the surviving worker
    assert run.data.metrics["seed_cached"] == 1.0  # the retry reused the seed stage...
    seed_attempts = [p for p in (store / "seed").glob("*/*") if p.is_dir()]
    assert len(seed_attempts) == 1  # ...which was computed once
    assert client.get_run(run.data.tags["mlflow.parentRunId"]).info.status == "FINISHED"
