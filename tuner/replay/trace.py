"""What a replayed search leaves: the compute spent and the incumbent's true quality over time."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Trace:
    """One replayed search: at each trial's end, the compute spent so far and the incumbent's true
    quality (None before any trial finished)."""

    points: list[tuple[float, float | None]] = field(default_factory=list)
    trials: int = 0
    finished: int = 0
    stages_computed: int = 0
    stages_reused: int = 0

    def quality_at(self, compute: float) -> float | None:
        best = None
        for spent, quality in self.points:
            if spent > compute:
                break
            best = quality
        return best

    def first_reach(self, target: float, budget: float) -> float | None:
        """Compute at which the incumbent's true quality first reaches `target`, within `budget`."""
        return next((c for c, q in self.points if q is not None and q >= target and c <= budget), None)
