"""The staged search behind Tune's Searcher interface: a trial's config is a rung job, its result feeds
the planner, and a failed job is neither ranked nor retried."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.search.job_searcher import JOB_KEY, METRIC, StagedSearcher
from tuner.search.staged import StagedPlanner
from tuner.spaces.ranges import Base
from tuner.spaces.space import CHOICE, load_search

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


@pytest.fixture
def searcher() -> StagedSearcher:
    search = load_search([SPACES / "cam.yaml", SPACES / "seam.yaml"])
    return StagedSearcher(StagedPlanner(search, seed=0, base=Base(), audit=0.0, min_records=4))


def test_a_trial_config_is_a_rung_job_with_its_parameters(searcher: StagedSearcher) -> None:
    config = searcher.suggest("t0")
    assert config is not None
    job = config[JOB_KEY]
    assert (job["rung"], job["until"], job["fidelity"], job["rng_offset"]) == (0, "seed", "none", 0)
    assert config[CHOICE] == "cam" and "params" not in job
    assert not any(k.startswith("segment.") for k in config)  # no DeepLab knobs below rung 2


def test_results_rank_configs_and_failed_jobs_are_neither_ranked_nor_retried(
    searcher: StagedSearcher, caplog: pytest.LogCaptureFixture
) -> None:
    configs = [searcher.suggest(f"t{i}") for i in range(5)]
    values = [0.2, 0.9, 0.4, 0.6]
    for i, value in enumerate(values):
        searcher.on_trial_complete(f"t{i}", {METRIC: value})
    searcher.on_trial_complete("t4", error=True)
    assert "failed: not ranked" in caplog.text
    ranked = searcher.planner.ladder.records[0]
    assert len(ranked) == 4 and configs[4][JOB_KEY]["config"] not in ranked  # type: ignore[index]
    promoted = searcher.suggest("t5")
    assert promoted is not None and promoted[JOB_KEY]["rung"] == 1
    assert promoted[JOB_KEY]["config"] == configs[1][JOB_KEY]["config"]  # type: ignore[index]
    searcher.on_trial_complete("unknown")  # a trial the searcher never issued (a resumed run's) is ignored
