"""A real search's reports read as a Trace: compute summed over every trial by report time, a point
per finished trial, the incumbent chosen by what it reported and scored by its held-out value."""

from __future__ import annotations

import pytest

from tuner.replay.observed import JobReport, Report, observed_job_trace, observed_trace


def _reports() -> list[Report]:
    """Two workers: t1 runs all three stages, t2 is stopped after its first, t3 and t4 finish."""
    return [
        Report("t1", 10, 1, 10.0, 0.5),
        Report("t2", 12, 1, 12.0, 0.1),  # stopped here: never a point
        Report("t1", 20, 2, 25.0, 0.6),
        Report("t3", 22, 1, 10.0, 0.4),
        Report("t1", 40, 3, 60.0, 0.45, holdout=0.44),
        Report("t3", 41, 2, 20.0, 0.5),
        Report("t4", 50, 1, 0.0, 0.5),  # its seed stage came from the store: free
        Report("t3", 70, 3, 50.0, 0.30, holdout=0.31),
        Report("t4", 80, 3, 30.0, 0.52, holdout=0.40),
    ]


def test_points_sum_every_trials_compute_at_each_finish() -> None:
    trace = observed_trace(reversed(_reports()), final_iteration=3)  # order comes from the times
    assert trace.trials == 4 and trace.finished == 3
    # t1 ends at 40: t1 60 + t2 12 + t3 10; t3 ends at 70: 60 + 12 + 50 + t4's 0; t4 ends at 80.
    assert [c for c, _ in trace.points] == [82.0, 122.0, 152.0]


def test_the_incumbent_is_chosen_by_its_report_and_scored_by_its_holdout() -> None:
    trace = observed_trace(_reports(), final_iteration=3)
    # t3 reports less than t1 (0.30 < 0.45) though its held-out score is no better: t1 stays.
    # t4 reports more (0.52): it becomes the incumbent though it holds out worse than t1.
    assert [q for _, q in trace.points] == [0.44, 0.44, 0.40]
    assert trace.first_reach(0.42, budget=1000.0) == 82.0
    assert trace.first_reach(0.42, budget=80.0) is None
    assert observed_trace(_reports(), final_iteration=3, mode="min").points[-1][1] == 0.31


def test_a_finished_trial_without_a_holdout_score_is_refused() -> None:
    with pytest.raises(ValueError, match="trial t1: its last report has no held-out score"):
        observed_trace([Report("t1", 1, 3, 5.0, 0.5)], final_iteration=3)


def _jobs() -> list[JobReport]:
    """A staged search: configurations 0-2 climb; 0 and 1 reach the full rung, 0 is repeated."""
    return [
        JobReport("j0", 1, 0, 0, 4.0, 0.6),
        JobReport("j1", 2, 1, 0, 4.0, 0.5),
        JobReport("j2", 3, 2, 0, 4.0, 0.4),  # never promoted: compute but no point
        JobReport("j3", 5, 0, 1, 6.0, 0.55),
        JobReport("j4", 6, 1, 1, 0.0, 0.56),  # its stages came from the store
        JobReport("j5", 9, 0, 3, 10.0, 0.50, holdout=0.47),
        JobReport("j6", 10, 1, 3, 10.0, 0.52, holdout=0.45),
        JobReport("j7", 14, 0, 4, 20.0, 0.56, holdout=None),  # mean of 0's draws: 0.53
    ]


def test_a_staged_search_scores_its_planners_incumbent_by_the_full_draws_holdout() -> None:
    trace = observed_job_trace(reversed(_jobs()))
    assert trace.trials == 3 and trace.finished == 3
    assert [c for c, _ in trace.points] == [28.0, 38.0, 58.0]
    # 0 leads at the full rung; 1 passes it (0.52 > 0.50); once 0 is repeated only repeated
    # configurations count, as in StagedPlanner.incumbent, and 0's full draw is what it holds out.
    assert [q for _, q in trace.points] == [0.47, 0.45, 0.47]
    assert observed_job_trace(_jobs(), mode="min").points[1][1] == 0.47


def test_a_staged_search_without_its_full_draws_holdout_is_refused() -> None:
    with pytest.raises(ValueError, match="job j5: a full-rung job without a held-out score"):
        observed_job_trace([JobReport("j5", 9, 0, 3, 10.0, 0.5)])
    with pytest.raises(ValueError, match="job j7: a repeat of configuration 0 before its full rung"):
        observed_job_trace([JobReport("j7", 9, 0, 4, 10.0, 0.5)])
