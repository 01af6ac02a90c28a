"""What every trial of a search gets besides its sampled config (bound with tune.with_parameters)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuner.spaces.space import SearchSpace


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial needs besides its sampled config; plain values, so Tune can pickle it.

    The search space and the base config travel parsed, not as file paths: a trial (or a retry on
    another node, or a resumed search on a new head) never reads the driver's files.
    """

    search: SearchSpace
    data_dir: str | None
    store_uri: str
    cache_dir: str | None  # node-local; None = wsss.default_cache_dir() on whichever node runs the trial
    experiment_id: str
    parent_run_id: str
    threads: int
    lock_actor: str | None  # lease actor for stores without file locks (object stores)
    base: dict[str, Any] | None = None  # the base config's settings (wsss.config_source), if any
    tracking_wait: float = 120.0  # how long a report waits for MLflow writes during an outage
    node_cache_bytes: int | None = None  # cap on this node's copies of remote artifacts
    short_fraction: float = 1 / 3  # staged search: the short DeepLab rung's share of the schedule
    gpus: float = 0.0  # GPUs each trial holds: above 0 it runs on CUDA or fails (tuner.trial.device)
    source_tags: dict[str, str] = field(default_factory=dict)  # MLflow's source and git commit tags
