"""Replayed arms drive the real searchers and schedulers: budgets hold, the plain arms compute every
stage, stock ASHA stops trials and Ray's OptunaSearch tells Optuna COMPLETE for them, the shipped arm
tells PRUNED and reuses stages only where it planned to, and a seed replays the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tuner.replay.conftest import COSTS, SPACES
from tuner.replay.pool import Pool
from tuner.replay.simulate import ARMS, replay

UNIT = sum(COSTS.values())


@pytest.fixture(scope="module")
def pool(table: Path) -> Pool:
    return Pool(table, SPACES)


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_an_arm_spends_its_budget_and_no_more_than_its_workers_overrun(pool: Pool, arm: str) -> None:
    trace = replay(arm, pool, "measured", 12, seed=0, workers=3)
    spent = [c for c, _ in trace.points]
    assert spent == sorted(spent) and trace.finished == len(spent) > 0
    # trials stop being started at the budget; the ones running may each finish a pipeline
    assert spent[-1] <= 12 * UNIT + 3 * UNIT
    assert trace.trials >= trace.finished


def test_plain_arms_compute_every_stage_of_every_trial(pool: Pool) -> None:
    trace = replay("a", pool, "voc", 10, seed=1, workers=2)
    assert trace.stages_reused == 0 and trace.stages_computed == 3 * trace.trials == 3 * trace.finished


def test_stock_asha_stops_trials_the_shipped_arm_reuses_stages(pool: Pool) -> None:
    stock = replay("a2", pool, "voc", 20, seed=0, workers=2)
    assert stock.trials > stock.finished  # ASHA stopped some at the CAM or pseudo-mask rung
    assert stock.stages_computed < 3 * stock.trials
    shipped = replay("b", pool, "voc", 20, seed=0, workers=2)
    assert shipped.stages_reused > 0  # planned reuse of a finished seed (or seed + refine) stage
    assert shipped.stages_reused + shipped.stages_computed <= 3 * shipped.trials


def test_a_seed_replays_the_same_and_another_seed_differs(pool: Pool) -> None:
    first, again = (replay("b", pool, "measured", 8, seed=3, workers=2) for _ in range(2))
    assert first.points == again.points and first.trials == again.trials
    other = replay("b", pool, "measured", 8, seed=4, workers=2)
    assert (other.points, other.trials) != (first.points, first.trials)


def test_the_incumbent_quality_is_a_pool_pipelines_true_quality(pool: Pool) -> None:
    trace = replay("a3", pool, "voc", 30, seed=2, workers=1)
    truths = set(pool.true_qualities().tolist())
    assert trace.points and all(q in truths for _, q in trace.points)
