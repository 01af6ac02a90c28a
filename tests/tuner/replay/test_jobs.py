"""The staged search replayed as rung jobs: it spends its budget, a promotion pays only the stages its
configuration is missing, the repeat rung draws the whole pipeline again, and a seed replays the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tuner.replay.conftest import COSTS, SPACES, write_table
from tuner.replay.jobs import _JobLoop, replay_staged
from tuner.replay.pool import Pool
from tuner.replay.simulate import replay
from tuner.search.job_searcher import StagedSearcher
from tuner.search.staged import Job, StagedPlanner

UNIT = sum(COSTS.values())


@pytest.fixture(scope="module")
def pool(table: Path) -> Pool:
    return Pool(table, SPACES)


@pytest.fixture(scope="module")
def repeated(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    folder = tmp_path_factory.mktemp("replay-repeated")
    write_table(folder, repeat_all=True)
    return Pool(folder, SPACES)


def test_the_staged_arm_spends_its_budget_and_reuses_what_promotions_build_on(pool: Pool) -> None:
    trace = replay("staged", pool, "measured", 12, seed=0, workers=3)
    spent = [c for c, _ in trace.points]
    assert spent and spent == sorted(spent)
    assert spent[-1] <= 12 * UNIT + 3 * UNIT  # jobs stop being started at the budget
    # every promotion reads the stages below its rung from the store
    assert trace.stages_reused > 0
    # more configurations examined than the budget's worth of whole pipelines
    assert trace.trials > 12


def test_the_staged_arm_finds_the_top_of_a_pool_whose_rungs_rank_true(pool: Pool) -> None:
    # the table's pseudo-mask and short-schedule values rank like the true quality
    finals = [replay_staged(pool, "voc", 20, seed=s, workers=2).points[-1][1] for s in range(3)]
    assert min(finals) >= np.percentile(pool.true_qualities(), 90)


def test_a_job_pays_only_the_stages_its_configuration_is_missing(repeated: Pool) -> None:
    searcher = StagedSearcher(StagedPlanner(repeated.search, seed=0, repeat=True))
    loop = _JobLoop(searcher, repeated, "measured", 1e9, 1)
    key = repeated.design.pipelines[0]
    params = repeated.design.params(*key)
    upstream = {k: v for k, v in params.items() if not k.startswith("segment.")}
    short = repeated.rows[key].short_seconds[1]
    paid = [loop.run_job(Job(0, rung, upstream if rung < 2 else params), key)[0] for rung in range(5)]
    assert paid[:4] == [COSTS["seed"], COSTS["refine"], short, COSTS["segment"]]
    assert paid[4] == UNIT  # the repeat draws seed, refine and DeepLab again at the next rng_seed
    assert loop.run_job(Job(1, 3, params), key)[0] == 0.0  # all of it in the store already
    # the repeat reports the rng_seed 1 draw's search-half value
    assert loop.run_job(Job(0, 4, params), key)[1] == repeated.draw(key, 1)[0]  # type: ignore[index]


def test_a_seed_replays_the_same(pool: Pool) -> None:
    first, again = (replay_staged(pool, "measured", 8, seed=5, workers=2) for _ in range(2))
    assert first.points == again.points and first.trials == again.trials
