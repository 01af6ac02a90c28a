"""`wsss-tune spot-watch`: a spot worker's two-minute interruption notice turned into a Ray drain.

EC2 announces a spot reclaim about two minutes ahead in the instance metadata (IMDSv2,
`/latest/meta-data/spot/instance-action`: 404 until then, then `{"action": ..., "time": ...}`). The
watcher, started beside `ray start` on each worker (cluster.yaml), polls it and on a notice asks Ray's
GCS to drain the node for preemption with a deadline before the termination time. Ray then schedules
nothing new there, and a trial that dies with the node after the deadline fails with a preempted
ActorDiedError, which Tune retries without counting against --max-failures (ray#41609 is about the
loss that is not announced, which still counts). The retry reuses every stage the trial published.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

log = logging.getLogger(__name__)

IMDS = "http://169.254.169.254"
NOTICE_PATH = "/latest/meta-data/spot/instance-action"


def _token(imds: str, timeout: float) -> str:
    request = urllib.request.Request(
        f"{imds}/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def interruption_time(imds: str = IMDS, timeout: float = 2.0) -> float | None:
    """The announced termination time (epoch seconds), or None while no notice is posted."""
    request = urllib.request.Request(
        imds + NOTICE_PATH, headers={"X-aws-ec2-metadata-token": _token(imds, timeout)}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            notice = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise
    stamp = datetime.strptime(notice["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    log.warning("spot interruption notice: %s at %s", notice.get("action"), notice["time"])
    return stamp.timestamp()


def local_node_id(gcs: object, ip: str) -> str:
    """The alive Ray node whose raylet listens on `ip` (this host)."""
    from ray.core.generated import gcs_pb2

    alive_state = gcs_pb2.GcsNodeInfo.ALIVE  # type: ignore[attr-defined]  # generated, untyped
    alive = [
        node_id.hex()
        for node_id, info in gcs.get_all_node_info().items()  # type: ignore[attr-defined]
        if info.state == alive_state and info.node_manager_address == ip
    ]
    if len(alive) != 1:
        raise RuntimeError(f"{len(alive)} alive Ray nodes at {ip}; pass --node-id")
    return alive[0]


def drain_for_preemption(address: str, node_id: str | None, ends_at: float, margin: float) -> str:
    """Ask the GCS at `address` to drain the node for preemption, its deadline `margin` seconds before
    `ends_at` (and not in the past); returns the node id."""
    import ray
    from ray.core.generated import autoscaler_pb2

    gcs = ray._raylet.GcsClient(address=address)  # type: ignore[attr-defined]  # what `ray drain-node` uses
    if node_id is None:
        from ray.util import get_node_ip_address

        node_id = local_node_id(gcs, get_node_ip_address())
    deadline = max(time.time() + 1.0, ends_at - margin)
    accepted, why = gcs.drain_node(
        node_id,
        autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),  # type: ignore[attr-defined]
        "spot interruption notice",
        int(deadline * 1000),
    )
    if not accepted:
        raise RuntimeError(f"Ray refused to drain node {node_id}: {why}")
    log.warning("drained node %s for preemption, deadline in %.0f s", node_id, deadline - time.time())
    return node_id


def watch(address: str, node_id: str | None, imds: str, poll: float, margin: float) -> str:
    """Poll for a notice (metadata errors are logged and retried) and drain once one comes."""
    while True:
        try:
            ends_at = interruption_time(imds)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("instance metadata unreadable (%s); trying again", exc)
            ends_at = None
        if ends_at is not None:
            return drain_for_preemption(address, node_id, ends_at, margin)
        time.sleep(poll)
