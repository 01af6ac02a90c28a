"""What both replay loops share (tuner.replay.simulate for trials, tuner.replay.jobs for rung jobs):
the compute spent on a simulated clock, and the keys a content-addressed store gives each stage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tuner.replay.design import stage_of
from tuner.replay.pool import STAGES


@dataclass
class Clock:
    """Worker-busy time: every stage run as (start, end)."""

    busy: list[tuple[float, float]] = field(default_factory=list)

    def run(self, now: float, cost: float) -> None:
        if cost > 0:
            self.busy.append((now, now + cost))

    def spent(self, now: float) -> float:
        return sum(min(end, now) - start for start, end in self.busy if start <= now)


def store_keys(
    params: dict[str, Any], upstream: dict[str, Any] | None = None, segment: dict[str, Any] | None = None
) -> tuple[str, str, str]:
    """Per stage, the exact knobs up to it, what a content-addressed store keys that stage on; plus
    `upstream` in every stage's key (an rng_seed) and `segment` in the last one's (DeepLab's schedule)."""
    held = dict(upstream or {})
    keys = []
    for stage in STAGES:
        held |= {k: v for k, v in params.items() if stage_of(k) == stage}
        extra = (segment or {}) if stage == "segment" else {}
        keys.append(json.dumps(held | extra, sort_keys=True))
    return (keys[0], keys[1], keys[2])
