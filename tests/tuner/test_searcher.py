"""What Optuna receives from Tune, checked on the searcher itself (as Ray's own searcher tests do)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tuner.searcher import StageAwareOptunaSearch


def _space(trial: optuna.Trial) -> dict[str, str]:
    trial.suggest_float("x", 0.0, 1.0)
    return {"space": "s"}


def _drive(searcher: OptunaSearch) -> dict[str, TrialState]:
    """A trial stopped after stage 1, one that finished all three stages, one that crashed."""
    for trial_id, stages, error in (("pruned", 1, False), ("complete", 3, False), ("crashed", 2, True)):
        assert searcher.suggest(trial_id)["space"] == "s"
        result = {}
        for stage in range(1, stages + 1):
            result = {"objective": 0.1 * stage, "training_iteration": stage}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result=None if error else result, error=error)
    trials = searcher._ot_study.trials
    return {name: trial.state for name, trial in zip(("pruned", "complete", "crashed"), trials, strict=True)}


def test_stopped_trials_reach_optuna_as_pruned() -> None:
    searcher = StageAwareOptunaSearch(space=_space, metric="objective", mode="max", final_iteration=3, seed=0)
    states = _drive(searcher)
    assert states == {
        "pruned": TrialState.PRUNED,
        "complete": TrialState.COMPLETE,
        "crashed": TrialState.FAIL,
    }
    pruned, complete, _ = searcher._ot_study.trials
    # Optuna keeps a pruned trial's stage values as intermediate values (and its last one as its value);
    # TPE ranks pruned trials below every completed one rather than as final scores.
    assert pruned.intermediate_values == {1: 0.1}
    assert complete.value == 0.30000000000000004 and complete.intermediate_values == {
        1: 0.1,
        2: 0.2,
        3: 0.30000000000000004,
    }


def test_rays_default_would_tell_complete_with_the_stage_one_value() -> None:
    """The bias the stage-aware searcher removes (ray PR#5651): a stopped trial becomes COMPLETE."""
    states = _drive(OptunaSearch(space=_space, metric="objective", mode="max", seed=0))
    assert states["pruned"] == TrialState.COMPLETE


def test_searcher_state_survives_save_and_restore(tmp_path: Path) -> None:
    searcher = StageAwareOptunaSearch(space=_space, metric="objective", mode="max", final_iteration=3, seed=0)
    _drive(searcher)
    searcher.save(str(tmp_path / "state.pkl"))
    restored = StageAwareOptunaSearch(space=_space, metric="objective", mode="max", final_iteration=3)
    restored.restore(str(tmp_path / "state.pkl"))
    assert [t.state for t in restored._ot_study.trials] == [
        TrialState.PRUNED,
        TrialState.COMPLETE,
        TrialState.FAIL,
    ]
    assert restored.final_iteration == 3
