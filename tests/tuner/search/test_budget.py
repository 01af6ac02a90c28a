"""`--budget` in stage compute: hours, minutes, or full-pipeline equivalents at the search's own prices."""

from __future__ import annotations

import pytest

import wsss
from tuner.search.budget import ComputeBudget
from tuner.search.options import SearchOptions, parse_budget


def test_budget_text_is_hours_minutes_or_pipelines() -> None:
    assert parse_budget("4h") == (4.0, "hours")
    assert parse_budget("90m") == (90.0, "minutes")
    assert parse_budget("12.5x") == (12.5, "pipelines")
    for bad in ("4", "h", "-1h", "0x", "4 hours", "1e3m"):
        with pytest.raises(wsss.ConfigError, match=r"--budget .*hours \(4h\)"):
            parse_budget(bad)


def test_budget_is_refused_for_the_asha_searcher() -> None:
    options = SearchOptions(space_files=("s.yaml",), samples=4, experiment="e", budget="2h")
    with pytest.raises(wsss.ConfigError, match="--budget: only the staged searcher"):
        options.validate()
    SearchOptions(
        space_files=("s.yaml",), samples=4, experiment="e", budget="2h", searcher="staged"
    ).validate()
    with pytest.raises(wsss.ConfigError, match="--searcher 'tpe': one of asha, staged"):
        SearchOptions(space_files=("s.yaml",), samples=4, experiment="e", searcher="tpe").validate()


def test_time_budgets_count_only_computed_stages() -> None:
    budget = ComputeBudget.parse("2m", 1 / 3)
    budget.record({"seed_compute_seconds": 50.0, "objective": 0.4}, "none")
    budget.record({}, "none")  # a job that read every stage from the store spends nothing
    assert budget.used() == pytest.approx(50 / 60) and not budget.exhausted()
    budget.record({"refine_compute_seconds": 70.0}, "none")
    assert budget.exhausted()


def test_pipeline_budgets_price_a_pipeline_from_the_search_itself() -> None:
    budget = ComputeBudget.parse("2x", 0.25)
    budget.record({"seed_compute_seconds": 10.0}, "none")
    budget.record({"refine_compute_seconds": 20.0}, "none")
    assert budget.used() is None and not budget.exhausted()  # DeepLab has no price yet: nothing stops
    budget.record({"segment_compute_seconds": 10.0}, "short")  # a quarter of the schedule: 40 s full
    assert budget.pipeline_seconds() == pytest.approx(70.0)
    assert budget.used() == pytest.approx(40 / 70)
    budget.record({"segment_compute_seconds": 60.0}, "full")  # a measured full schedule replaces the estimate
    assert budget.pipeline_seconds() == pytest.approx(90.0)
    assert budget.used() == pytest.approx(100 / 90)
    budget.record(
        {"seed_compute_seconds": 10.0, "refine_compute_seconds": 20.0, "segment_compute_seconds": 60.0},
        "full",
    )
    assert budget.exhausted() and budget.describe() == "2.11 of 2 pipelines"
