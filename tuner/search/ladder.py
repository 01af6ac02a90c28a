"""The staged search's ladder (tuner.search.staged): the rungs' records and promotions, and the
reduction factor a rung's measured fidelity allows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from tuner.trial.job import RUNG_NAMES


def eta_for(lower_bound: float, eta: float) -> float:
    """A rung's reduction factor from the lower bound of its fidelity (search-review.md 3.2 item 5):
    below 0.3 it promotes everything (the rung is off), below 0.7 half, above that `eta`."""
    if lower_bound < 0.3:
        return 1.0
    return min(2.0, eta) if lower_bound < 0.7 else eta


def spearman_lower(
    x: Sequence[float], y: Sequence[float], rng: np.random.Generator, boot: int = 500
) -> float:
    """The 5% bootstrap quantile of Spearman's rank correlation of paired values (all resamples at
    once: ranks with ties averaged, then Pearson's correlation of the ranks, row by row)."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    index = rng.integers(0, len(xs), (boot, len(xs)))
    rx, ry = rankdata(xs[index], axis=1), rankdata(ys[index], axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    norm = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    valid = norm > 0  # a resample of one repeated pair has no ranking
    if not valid.any():
        return -1.0
    return float(np.quantile((rx * ry).sum(axis=1)[valid] / norm[valid], 0.05))


@dataclass
class Ladder:
    """The rungs' records (config -> value, larger is better) and the promotions made from each."""

    etas: tuple[float, ...]  # per promotion out of rungs 0..len(RUNGS)-2
    min_records: int
    records: list[dict[int, float]] = field(default_factory=lambda: [{} for _ in RUNG_NAMES])
    promoted: list[set[int]] = field(default_factory=lambda: [set() for _ in RUNG_NAMES])

    def promotable(self, rung: int, eta: float) -> list[int]:
        """The configurations of `rung` due a promotion, best first: in the top floor(n / eta) of a rung
        holding at least `min_records` records, and not promoted from it yet."""
        held = self.records[rung]
        if len(held) < self.min_records:
            return []
        top = sorted(held, key=lambda c: -held[c])[: int(len(held) // eta)]
        return [c for c in top if c not in self.promoted[rung]]
