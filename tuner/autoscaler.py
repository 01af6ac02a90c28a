"""The Ray autoscaler's choice of GPU node type on a cluster with a spot type and an on-demand fallback.

Ray's default scorer ranks node types by how well a demand fits them; two types with the same
resources tie, and a spot type whose launches fail for lack of capacity keeps being chosen. Ray does
track which node types failed to launch recently (NodeAvailabilitySummary, records kept 30 minutes)
and hands that to a scorer named by RAY_AUTOSCALER_UTILIZATION_SCORER, which cluster.yaml sets to
`spot_first` on the head: it ranks node types by (launched without failure lately, place in
WSSS_NODE_PREFERENCE, Ray's own score), so workers come from the spot type while it has capacity
and from the on-demand type while it has not.
"""

from __future__ import annotations

import os
from typing import Any

from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer

PREFERENCE_ENV = "WSSS_NODE_PREFERENCE"  # node types, most preferred first, comma-separated


def spot_first(
    node_resources: dict[str, float],
    resources: list[dict[str, float]],
    node_type: str,
    *,
    node_availability_summary: Any,
) -> tuple[Any, ...] | None:
    """Ray's utilization score, ranked first by recent launch failures, then by the preference list."""
    score = _default_utilization_scorer(
        node_resources,  # type: ignore[arg-type]  # Ray types them as numbers.Real
        resources,  # type: ignore[arg-type]
        node_type,
        node_availability_summary=node_availability_summary,
    )
    if score is None:
        return None
    record = node_availability_summary.node_availabilities.get(node_type)
    available = record is None or record.is_available
    order = [t.strip() for t in os.environ.get(PREFERENCE_ENV, "").split(",") if t.strip()]
    rank = len(order) - order.index(node_type) if node_type in order else 0
    return (available, rank, *score)
