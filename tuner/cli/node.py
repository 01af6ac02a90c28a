"""`wsss-tune spot-watch`: run beside `ray start` on a spot worker (cluster.yaml), see tuner.spot."""

from __future__ import annotations

import argparse

from tuner.spot import IMDS, watch


def add_node_parsers(sub: argparse._SubParsersAction) -> None:
    spot = sub.add_parser(
        "spot-watch",
        help="on a spot worker: drain this Ray node for preemption when EC2 posts an interruption notice, "
        "so its trials are retried without counting against --max-failures",
    )
    spot.add_argument("--address", required=True, help="the Ray cluster's GCS, e.g. $RAY_HEAD_IP:6379")
    spot.add_argument("--node-id", help="the Ray node to drain (default: the one on this host's IP)")
    spot.add_argument("--imds", default=IMDS, help=f"the instance metadata service (default {IMDS})")
    spot.add_argument("--poll", type=float, default=5.0, help="seconds between looks (default 5)")
    spot.add_argument(
        "--margin",
        type=float,
        default=15.0,
        help="the drain deadline, in seconds before the announced termination (default 15)",
    )


def cmd_spot_watch(args: argparse.Namespace) -> int:
    node = watch(args.address, args.node_id, args.imds, args.poll, args.margin)
    print(f"drained Ray node {node} for preemption")
    return 0
