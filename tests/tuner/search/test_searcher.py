"""What Optuna receives from Tune, checked on the searcher itself (as Ray's own searcher tests do)."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tuner.search.searcher import StageAwareOptunaSearch

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane


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


def _staged(config: dict) -> None:
    """Three 'stages' whose value grows with x; the trial runs them as a pipeline trial does."""
    from ray import tune

    for stage in (1, 2, 3):
        tune.report({"objective": config["x"] * stage})


def test_a_real_tune_run_gives_optuna_the_stopping_value_of_pruned_trials() -> None:
    """Driven by Ray Tune 2.60 itself with ASHA at every stage boundary: Tune passes the result that
    stops a trial only to on_trial_complete, and the pruned trial still holds it."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from tuner.search.strategy import sampler

    searcher = StageAwareOptunaSearch(
        space=_space, metric="objective", mode="max", final_iteration=3, sampler=sampler(0)
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        tune.Tuner(
            _staged,
            tune_config=tune.TuneConfig(
                metric="objective",
                mode="max",
                search_alg=searcher,
                scheduler=ASHAScheduler(
                    time_attr="training_iteration", max_t=3, grace_period=1, reduction_factor=2
                ),
                num_samples=10,
                max_concurrent_trials=1,
            ),
            run_config=tune.RunConfig(verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    trials = searcher._ot_study.trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 10
    for trial in pruned:  # every stage it reached, the stopping one included
        reached = max(trial.intermediate_values)
        assert list(trial.intermediate_values) == list(range(1, reached + 1)) and reached < 3
        assert trial.intermediate_values[reached] == pytest.approx(trial.params["x"] * reached)
    for trial in complete:
        assert trial.value == pytest.approx(trial.params["x"] * 3) and len(trial.intermediate_values) == 3


def test_a_retried_trial_reporting_its_stages_again_is_not_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    searcher = StageAwareOptunaSearch(space=_space, metric="objective", mode="max", final_iteration=3, seed=0)
    searcher.suggest("t")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns (UserWarning) when a step is reported twice
        for _attempt in range(2):
            for stage in (1, 2):
                searcher.on_trial_result("t", {"objective": 0.1 * stage, "training_iteration": stage})
    assert searcher._ot_study.trials[0].intermediate_values == {1: 0.1, 2: 0.2}


def test_grouped_tpe_samples_each_methods_knobs_jointly() -> None:
    """Conditional knobs (a method's own, under the method choice) stay in TPE's multivariate model
    with group=True; without it Optuna samples them independently (and says so)."""
    from tuner.search.strategy import sampler

    def conditional(trial: optuna.Trial) -> dict[str, str]:
        method = trial.suggest_categorical("space", ["a", "b"])
        trial.suggest_float(f"{method}|x", 0.0, 1.0)
        trial.suggest_float(f"{method}|y", 0.0, 1.0)
        return {"space": method}

    study = optuna.create_study(sampler=sampler(0), direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        for _ in range(24):
            trial = study.ask()
            conditional(trial)
            params = trial.params
            method = params["space"]
            study.tell(trial, -((params[f"{method}|x"] - 0.8) ** 2) - (params[f"{method}|y"] - 0.2) ** 2)
    assert study.sampler._group is True and study.sampler._multivariate is True
    late = [t for t in study.trials[12:] if t.params["space"] == study.best_params["space"]]
    method = study.best_params["space"]
    near = [
        abs(t.params[f"{method}|x"] - 0.8) < 0.3 and abs(t.params[f"{method}|y"] - 0.2) < 0.3 for t in late
    ]
    assert sum(near) >= len(near) / 2  # TPE models the conditional knobs, it does not sample blindly


def _copying(config: dict) -> None:
    """A pipeline-like trial whose first stage is either computed (`x`) or read from the store, as a
    downstream trial's copied seed stage is (a weak value, flagged cached), then computed stages."""
    from ray import tune

    from tuner.trial.trainable import STAGE_CACHED

    trial = config["trial"]
    tune.report({"objective": trial["x"], STAGE_CACHED: trial["cached"]})
    for stage in (2, 3):
        tune.report({"objective": trial["later"] * stage, STAGE_CACHED: False})


def _stages_reached(
    scheduler: object, later: float = 2.0, trials: list[dict] | None = None
) -> dict[float, int]:
    """Two computed trials, then one whose weak first stage came from the store (or `trials`), one at
    a time in this order through a real Tune run; the stages each trial reached."""
    import ray
    from ray import tune

    trials = trials or [
        {"x": 1.0, "later": 1.0, "cached": False},
        {"x": 0.9, "later": 0.9, "cached": False},
        {"x": 0.1, "later": later, "cached": True},
    ]
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        results = tune.Tuner(
            _copying,
            param_space={"trial": tune.grid_search(trials)},
            tune_config=tune.TuneConfig(metric="objective", mode="max", scheduler=scheduler),
            run_config=tune.RunConfig(verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    return {r.config["trial"]["x"]: r.metrics["training_iteration"] for r in results}


def test_a_stage_read_from_the_store_is_not_judged_again() -> None:
    """A downstream trial's copied seed stage (weaker than the rung's cutoff) does not stop it: it is
    judged on the first stage it computes. Plain ASHA stops it on the copy."""
    from ray.tune.schedulers import ASHAScheduler

    from tuner.search.strategy import StageASHA

    kwargs = {"time_attr": "training_iteration", "max_t": 3, "grace_period": 1, "reduction_factor": 2}
    assert _stages_reached(StageASHA(3, 2, records=1))[0.1] == 3
    assert _stages_reached(ASHAScheduler(**kwargs))[0.1] == 1


def test_a_rung_stops_nothing_until_it_holds_enough_records() -> None:
    """Ray's ASHA stops the second trial at a rung when it falls below the first (a cutoff on one
    record); StageASHA's rungs wait for min_records(rf) = 4 at rf 2."""
    from ray.tune.schedulers import ASHAScheduler

    from tuner.search.strategy import StageASHA, min_records

    trials = [{"x": x, "later": x, "cached": False} for x in (1.0, 0.9, 0.8, 0.7, 0.2)]
    plain = ASHAScheduler(time_attr="training_iteration", max_t=3, grace_period=1, reduction_factor=2)
    assert _stages_reached(plain, trials=trials)[0.9] == 1
    assert min_records(2) == 4 and min_records(3) == 4 and min_records(5) == 5
    reached = _stages_reached(StageASHA(3, 2), trials=trials)
    assert [reached[x] for x in (1.0, 0.9, 0.8, 0.7)] == [3, 3, 3, 3]
    assert reached[0.2] == 1  # the fifth, below the median of four records, is stopped
