"""Statistics that decide between search arms (search-review.md section 1.3-1.4):

- ERT, COCO's expected running time to a fixed target: the compute of every run until it reached the
  target (the whole budget for a run that did not) over the number of runs that reached it.
- The ERT ratio of a reference arm to another with a paired bootstrap CI over seeds (the same seeds
  resampled for both arms: common random numbers).
- A paired non-inferiority test of final quality: the lower bound of the one-sided 95% bootstrap
  interval of the mean difference lies above minus the margin.
- Anytime curves: median and interquartile range of the incumbent's true quality over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuner.replay.trace import Trace

BOOTSTRAP = 2000


def ert(reached: Sequence[float | None], budget: float) -> float:
    """Expected running time: inf when no run reached the target."""
    successes = [r for r in reached if r is not None]
    if not successes:
        return math.inf
    failures = len(reached) - len(successes)
    return (sum(successes) + failures * budget) / len(successes)


@dataclass(frozen=True)
class Ratio:
    ratio: float  # ERT(reference) / ERT(arm): above 1, the arm reaches the target with less compute
    ci_low: float
    ci_high: float
    reached: int  # seeds on which the arm reached the target
    seeds: int


def ert_ratio(
    reference: Sequence[float | None],
    arm: Sequence[float | None],
    budget: float,
    rng: np.random.Generator,
    level: float = 0.90,
) -> Ratio:
    """ERT(reference) / ERT(arm) with a paired percentile-bootstrap CI at `level` over the seeds."""
    if len(reference) != len(arm):
        raise ValueError("ert_ratio needs the same seeds for both arms")
    n = len(arm)

    def ratio(index: np.ndarray) -> float:
        ref, own = ert([reference[i] for i in index], budget), ert([arm[i] for i in index], budget)
        if math.isinf(own):
            return 0.0 if not math.isinf(ref) else math.nan
        return math.inf if math.isinf(ref) else ref / own

    samples = np.array([ratio(rng.integers(0, n, n)) for _ in range(BOOTSTRAP)])
    samples = samples[~np.isnan(samples)]
    tail = (1 - level) / 2
    # inverted_cdf: no interpolation, so an infinite ratio (the reference never reached) stays infinite.
    low, high = (
        np.quantile(samples, [tail, 1 - tail], method="inverted_cdf") if samples.size else (math.nan,) * 2
    )
    return Ratio(ratio(np.arange(n)), float(low), float(high), sum(r is not None for r in arm), n)


@dataclass(frozen=True)
class NonInferiority:
    mean_difference: float  # arm - reference, in mIoU (0-1)
    lower_bound: float  # one-sided 95% bootstrap bound
    margin: float
    non_inferior: bool


def non_inferiority(
    reference: Sequence[float], arm: Sequence[float], rng: np.random.Generator, margin: float = 0.005
) -> NonInferiority:
    diff = np.asarray(arm, dtype=float) - np.asarray(reference, dtype=float)
    means = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(BOOTSTRAP)])
    lower = float(np.quantile(means, 0.05))
    return NonInferiority(float(diff.mean()), lower, margin, lower > -margin)


def final_quality(trace: Trace, budget: float, floor: float) -> float:
    """The incumbent's true quality at `budget` (`floor` before any trial finished)."""
    quality = trace.quality_at(budget)
    return floor if quality is None else quality


def anytime(traces: Sequence[Trace], grid: np.ndarray, floor: float) -> np.ndarray:
    """(3, len(grid)): the 25th, 50th and 75th percentile over traces of the incumbent's true quality."""
    values = np.array([[final_quality(t, c, floor) for c in grid] for t in traces])
    return np.quantile(values, [0.25, 0.5, 0.75], axis=0)
