"""The staged search behind Tune's Searcher interface: a trial's config is a rung job, its result feeds
the planner, and a failed job is neither ranked nor retried."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ray.tune.search import Searcher

import wsss
from tuner.search.budget import ComputeBudget
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


def _drive(searcher: StagedSearcher, jobs: int, start: int = 0, finish: bool = True) -> list[dict]:
    """Issue `jobs` jobs and report a value derived from each configuration's parameters."""
    issued = []
    for i in range(start, start + jobs):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict)
        issued.append(config)
        if finish:
            value = 0.3 + 0.01 * (hash(str(sorted(config.items()))) % 50)
            searcher.on_trial_complete(f"t{i}", {METRIC: value, "seed_compute_seconds": 2.0})
    return issued


def test_saved_state_restores_the_ladder_studies_and_jobs_in_flight(
    searcher: StagedSearcher, tmp_path: Path
) -> None:
    _drive(searcher, 14)
    in_flight = _drive(searcher, 2, start=14, finish=False)
    path = tmp_path / "searcher-state.json"
    searcher.save(str(path))
    search = searcher.planner.space
    restored = StagedSearcher(StagedPlanner(search, seed=0, base=Base(), audit=0.0, min_records=4))
    restored.restore(str(path))
    assert restored.planner.ladder.records == searcher.planner.ladder.records
    assert restored.planner.ladder.promoted == searcher.planner.ladder.promoted
    assert restored.spent == searcher.spent and restored.finished_jobs == 14
    old, new = searcher.planner.upstream.trials, restored.planner.upstream.trials
    assert [(t.state, t.params, t.value) for t in new] == [(t.state, t.params, t.value) for t in old]
    # A job in flight at the save still reports into the restored ladder (and tells its study).
    for i, config in enumerate(in_flight):
        restored.on_trial_complete(f"t{14 + i}", {METRIC: 0.99})
        job = config[JOB_KEY]
        assert restored.planner.ladder.records[job["rung"]][job["config"]] == 0.99
    # Both go on to issue the same next job (the generator's state travelled too).
    for i in range(len(in_flight)):
        searcher.on_trial_complete(f"t{14 + i}", {METRIC: 0.99})
    assert searcher.suggest("a")[JOB_KEY] == restored.suggest("a")[JOB_KEY]  # type: ignore[index]


def test_a_restored_searcher_proposes_new_configurations_not_its_first_ones_again(tmp_path: Path) -> None:
    def planner() -> StagedPlanner:
        return StagedPlanner(
            load_search([SPACES / "cam.yaml"]), seed=0, base=Base(), audit=0.0, min_records=4
        )

    searcher = StagedSearcher(planner())
    issued = _drive(searcher, 4)  # in TPE's random start-up: the draws a sampler seeded afresh replays
    searcher.save(str(tmp_path / "state.json"))
    restored = StagedSearcher(planner())
    restored.restore(str(tmp_path / "state.json"))
    later = _drive(restored, 10, start=4)
    upstream = [
        json.dumps({k: v for k, v in c.items() if k != JOB_KEY}, sort_keys=True)
        for c in issued + later
        if c[JOB_KEY]["rung"] == 0
    ]
    assert len(upstream) >= 6 and len(set(upstream)) == len(upstream)


def test_a_damaged_state_is_refused_naming_the_file(searcher: StagedSearcher, tmp_path: Path) -> None:
    path = tmp_path / "searcher-state.json"
    path.write_text('{"planner": {"version": 1}}')
    with pytest.raises(wsss.ConfigError, match=r"searcher-state\.json: not a staged searcher's state"):
        searcher.restore(str(path))
    path.write_text("\x80 not json")
    with pytest.raises(
        wsss.ConfigError, match=r"searcher-state\.json: the staged searcher's state is unreadable"
    ):
        searcher.restore(str(path))


def test_pickled_searcher_carries_its_state_as_json_not_its_studies(searcher: StagedSearcher) -> None:
    _drive(searcher, 10)
    searcher.budget = ComputeBudget.parse("1m", 1 / 3)
    searcher.budget.record({"seed_compute_seconds": 30.0}, "none")
    # What Tune pickles: the state as JSON plus the parsed space and base config to rebuild from.
    state = searcher.__getstate__()
    json.dumps(state["state"])
    copy = StagedSearcher.__new__(StagedSearcher)
    copy.__setstate__(state)
    assert copy.planner.ladder.records == searcher.planner.ladder.records
    assert copy.budget is not None and copy.budget.spent == 30.0
    assert copy.suggest("x")[JOB_KEY] == searcher.suggest("x")[JOB_KEY]  # type: ignore[index]


def test_a_spent_budget_finishes_the_search(searcher: StagedSearcher) -> None:
    searcher.budget = ComputeBudget.parse("0.1m", 1 / 3)  # 6 s of stage compute
    _drive(searcher, 3)  # 2 s each
    assert searcher.suggest("next") == Searcher.FINISHED
    assert "budget 0.10 of 0.1 minutes" in searcher.progress()


def test_a_repeat_job_carries_the_earlier_draw_and_the_configuration_spend() -> None:
    search = load_search([SPACES / "cam.yaml"])
    planner = StagedPlanner(search, seed=0, base=Base(), audit=0.0, min_records=2, etas=(2, 2, 2, 2))
    searcher = StagedSearcher(planner)
    for i in range(60):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict)
        job = config[JOB_KEY]
        if job["rung"] == 4:
            assert job["rng_offset"] == 1 and len(job["draws"]) == 1
            # A child's own jobs (short, full: 4 s each); its upstream's CAM and pseudo jobs are the parent's.
            assert job["spent"] == pytest.approx(4.0 * 2)
            assert planner.configs[job["config"]].parent is not None
            return
        searcher.on_trial_complete(f"t{i}", {METRIC: 0.5 + 0.001 * i, "segment_compute_seconds": 4.0})
    pytest.fail("no repeat job in 60")


def test_saved_state_keeps_the_stage_prices_and_the_siblings_owed(tmp_path: Path) -> None:
    search = load_search([SPACES / "cam.yaml", SPACES / "seam.yaml"])

    def searcher() -> StagedSearcher:
        return StagedSearcher(StagedPlanner(search, seed=3, base=Base(), audit=0.0, refine_branch=3))

    first = searcher()
    for i in range(9):  # the jobs' computed stages set the prices refine_branch weighs
        config = first.suggest(f"t{i}")
        assert isinstance(config, dict)
        result = {METRIC: 0.1 * (i % 7), f"{config[JOB_KEY]['until']}_compute_seconds": 3.0 + i}
        first.on_trial_complete(f"t{i}", result)
    assert first.planner.prices["seed"] and first.planner.prices["refine"]
    assert first.planner.sibling_of  # promoted seeds still owed a sibling
    path = tmp_path / "searcher-state.json"
    first.save(str(path))
    restored = searcher()
    restored.restore(str(path))
    assert restored.planner.prices == first.planner.prices
    assert restored.planner.sibling_of == first.planner.sibling_of
    assert first.suggest("a")[JOB_KEY] == restored.suggest("a")[JOB_KEY]  # type: ignore[index]
