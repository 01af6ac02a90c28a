"""ERT, its paired bootstrap ratio, the non-inferiority test and anytime curves, on cases whose
answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuner.replay.stats import anytime, ert, ert_ratio, final_quality, non_inferiority
from tuner.replay.trace import Trace


def test_ert_counts_failures_at_the_budget() -> None:
    assert ert([10.0, 20.0, None], budget=100.0) == pytest.approx((10 + 20 + 100) / 2)
    assert ert([None, None], budget=100.0) == math.inf


def test_ratio_of_an_arm_twice_as_fast_and_of_identical_arms() -> None:
    rng = np.random.default_rng(0)
    reference = [float(x) for x in rng.uniform(10, 50, 30)]
    same = ert_ratio(reference, reference, 100.0, rng)
    assert (same.ratio, same.ci_low, same.ci_high) == (1.0, 1.0, 1.0)
    twice = ert_ratio(reference, [x / 2 for x in reference], 100.0, rng)
    assert twice.ratio == pytest.approx(2.0) and twice.ci_low == pytest.approx(2.0)
    noisy = ert_ratio(reference, [x / 2 if i % 3 else None for i, x in enumerate(reference)], 100.0, rng)
    assert noisy.ci_low < noisy.ratio < noisy.ci_high and noisy.reached == 20


def test_a_reference_that_never_reaches_gives_an_infinite_ratio() -> None:
    rng = np.random.default_rng(0)
    r = ert_ratio([None] * 10, [5.0] * 10, 100.0, rng)
    assert r.ratio == math.inf and r.ci_low == math.inf
    r = ert_ratio([5.0] * 10, [None] * 10, 100.0, rng)
    assert r.ratio == 0.0 and r.reached == 0


def test_non_inferiority_against_the_margin() -> None:
    rng = np.random.default_rng(0)
    reference = [0.5 + 0.01 * i for i in range(30)]
    assert non_inferiority(reference, [q - 0.001 for q in reference], rng).non_inferior
    worse = non_inferiority(reference, [q - 0.02 for q in reference], rng)
    assert not worse.non_inferior and worse.mean_difference == pytest.approx(-0.02)


def test_the_incumbent_at_a_compute_and_the_anytime_quartiles() -> None:
    trace = Trace(points=[(10.0, 0.3), (20.0, 0.5), (40.0, 0.6)])
    assert final_quality(trace, 5.0, floor=0.0) == 0.0
    assert final_quality(trace, 25.0, floor=0.0) == 0.5
    assert trace.first_reach(0.55, budget=100.0) == 40.0 and trace.first_reach(0.55, budget=30.0) is None
    other = Trace(points=[(10.0, 0.1)])
    q25, q50, q75 = anytime([trace, other], np.array([30.0]), floor=0.0)
    assert q25[0] <= q50[0] <= q75[0] and q50[0] == pytest.approx(0.3)
