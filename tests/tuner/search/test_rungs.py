"""StageASHA's rungs without a Tune run: where they are, and what they hold after a resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from ray.tune.schedulers import TrialScheduler

from tuner import internals
from tuner.search.strategy import StageASHA
from tuner.search.study import WARM_START
from tuner.trial.trainable import REUSE_KEY


@pytest.mark.parametrize("reduction_factor", [2, 3, 4, 8])
def test_every_stage_boundary_is_a_rung_whatever_the_reduction_factor(reduction_factor: int) -> None:
    """Ray puts rungs at grace * rf^k: rf 3 gave [3, 1] (3 = max_t never decides) and rf >= 4 gave [1]
    on a 3-stage search, so no refine rung."""
    for stages, milestones in ((3, [2, 1]), (2, [1])):
        (bracket,) = internals.brackets(StageASHA(stages, reduction_factor))
        assert internals.milestones(bracket) == milestones


def _trial(steps: dict[int, float], state: TrialState = TrialState.COMPLETE, **attrs: object) -> FrozenTrial:
    return create_trial(
        state=state,
        value=steps[3] if state == TrialState.COMPLETE else None,
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        intermediate_values=steps,
        user_attrs=attrs,
    )


def _first_report(scheduler: StageASHA, value: float) -> str:
    trial = SimpleNamespace(trial_id="new")  # ASHA reads only the id of a Tune trial
    scheduler.on_trial_add(None, trial)
    return scheduler.on_trial_result(None, trial, {"training_iteration": 1, "objective": value})


def test_a_resumed_search_refills_its_rungs_from_the_study() -> None:
    """Tune 2.60 does not save the scheduler: after a resume the rungs were empty, so the first
    trials at each rung passed unjudged."""
    finished = [_trial({1: 0.5 + 0.1 * n, 2: 0.6, 3: 0.4}) for n in range(4)]
    others = [
        _trial({1: 0.9, 2: 0.7, 3: 0.5}, **{REUSE_KEY: "seed"}),  # its stage 1 was a copy: not judged
        _trial({1: 0.9, 2: 0.9, 3: 0.9}, **{WARM_START: "other", "wsss_warm_start_trial": 0}),
        _trial({1: 0.9}, state=TrialState.RUNNING),  # will report again
        _trial({1: 0.1}, state=TrialState.PRUNED),
    ]
    for number, trial in enumerate([*finished, *others]):
        trial.number = number  # as a study numbers its trials (create_trial leaves 0)
    empty = StageASHA(3, 2, metric="objective", mode="max")
    assert _first_report(empty, 0.0) == TrialScheduler.CONTINUE
    resumed = StageASHA(3, 2, metric="objective", mode="max")
    assert resumed.restore_rungs([*finished, *others], "max") == 5 + 5
    (bracket,) = internals.brackets(resumed)
    recorded = dict(internals.rungs(bracket))
    assert sorted(recorded[1].values()) == pytest.approx([0.1, 0.5, 0.6, 0.7, 0.8])
    assert len(recorded[2]) == 5  # the four and the downstream trial's own refinement
    assert _first_report(resumed, 0.2) == TrialScheduler.STOP
    minimize = StageASHA(3, 2, metric="objective", mode="min")
    minimize.restore_rungs(finished, "min")
    assert sorted(dict(internals.rungs(internals.brackets(minimize)[0]))[1].values())[0] == pytest.approx(
        -0.8
    )
