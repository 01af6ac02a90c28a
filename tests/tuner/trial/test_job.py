"""What a rung job counts as its own compute (tuner.trial.job): the stages it computed, and the ones
its own earlier attempt computed, which it finds in the store when Tune runs it again (after a
resume from a checkpoint taken before it ended, or after a failure); never what another job built."""

from __future__ import annotations

from pathlib import Path

from tuner.trial.job import job_metrics, own_computation
from wsss.pipeline import StageOutcome

ME, OTHER = "search-run/trial_00003", "search-run/trial_00001"


def _outcome(stage: str, cached: bool, built_by: str, seconds: float, metrics: dict) -> StageOutcome:
    return StageOutcome(stage, f"key-{stage}", Path("/nowhere"), cached, 0.1, seconds, metrics, built_by)


def test_a_rerun_job_counts_the_stages_its_first_attempt_built_and_nothing_else() -> None:
    seed = _outcome("seed", True, OTHER, 50.0, {"cam_miou_best": 0.5})  # an upstream another job built
    refine = _outcome("refine", True, ME, 30.0, {"pseudo_miou": 0.6})  # built before the interruption
    assert own_computation([seed, refine], ME) == [refine]
    assert own_computation([seed, refine], "") == []  # an unnamed job counts only what it computes
    job = {"rung": 1, "fidelity": "none", "draws": [], "spent": 50.0}
    logged, value = job_metrics([seed, refine], job, "val_miou", ME)
    assert value == 0.6
    assert logged["job_compute_seconds"] == 30.0 and logged["compute_seconds"] == 80.0
    fresh = _outcome("refine", False, ME, 30.0, {"pseudo_miou": 0.6})  # the first attempt itself
    assert job_metrics([seed, fresh], job, "val_miou", ME)[0]["job_compute_seconds"] == 30.0
    assert job_metrics([seed, refine], job, "val_miou", "")[0]["job_compute_seconds"] == 0.0
