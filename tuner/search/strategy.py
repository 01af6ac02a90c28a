"""How a search proposes and stops trials: the sampler, the stage-aware searcher on the experiment's
persistent study, the scheduler whose rungs are the stages up to the metric's, and the proxies'
fidelity logged when the search ends."""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tuner import internals
from tuner.search.reuse import ReusePolicy
from tuner.search.searcher import StageAwareOptunaSearch
from tuner.search.study import load as load_study
from tuner.search.study import proxy_fidelity, study_path, study_storage, warm_start
from tuner.spaces.space import CHOICE, SearchSpace
from tuner.tracking.runs import log_metrics
from tuner.tracking.write_queue import retry
from tuner.trial.trainable import STAGE_CACHED, final_iteration

log = logging.getLogger(__name__)


def sampler(seed: int) -> optuna.samplers.TPESampler:
    """Multivariate TPE with `group=True`: each method's own knobs exist only under that method, and
    without groups TPE falls back to sampling such conditional parameters independently. The constant
    liar keeps trials in flight from being proposed again by parallel suggestions."""
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)


def make_searcher(
    space: SearchSpace,
    *,
    experiment: str,
    storage: str,
    seed: int,
    reuse_fraction: float,
    reuse_warmup: int,
    warm_start_from: str | None,
) -> StageAwareOptunaSearch:
    """The searcher, on the experiment's persistent study (tuner.search.study): a search in an experiment that
    was searched before continues its study, and `warm_start_from` (`--warm-start`) copies another
    experiment's trials."""
    reuse = ReusePolicy(fraction=reuse_fraction, warmup=reuse_warmup, seed=seed)
    # With a define-by-run space Tune does not pass metric/mode on to the searcher: it needs its own.
    searcher = StageAwareOptunaSearch(
        space=space.define,
        metric="objective",
        mode=space.mode,
        sampler=sampler(seed),
        study_name=experiment,
        storage=study_storage(study_path(storage, experiment)),
        final_iteration=final_iteration(space.metric),
        reuse=reuse if reuse_fraction > 0 else None,
        choice=CHOICE,
    )
    if warm_start_from:
        study = internals.study(searcher)
        assert study is not None  # OptunaSearch makes its study when given a space
        warm_start(study, load_study(storage, warm_start_from))
    return searcher


class StageASHA(ASHAScheduler):
    """ASHA that judges a trial at a stage boundary only on a stage the trial computed itself.

    A stage read from the store was judged at its rung when the trial that computed it reported it.
    A downstream trial (tuner.search.reuse) copies an upstream chosen for its end-to-end value; judging it
    again on the seed proxy (weakly correlated with val mIoU on small sets) stopped such trials at
    once, before they tested any knob of their own, and recorded the same value once per copy,
    pulling the rung's cutoff toward the most-copied upstream. Such a report continues the trial
    unrecorded; its first computed stage is judged at that stage's rung as usual."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._skipped: dict[str, int] = {}  # trial id -> the last stage it read from the store

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        stage = result.get(internals.time_attr(self), 0)
        if stage < internals.max_t(self):
            if result.get(STAGE_CACHED):
                self._skipped[trial.trial_id] = stage
                return TrialScheduler.CONTINUE
            # After a skipped rung ASHA would judge the next report at that rung, against values of an
            # earlier stage: a trial that skipped is judged only where its stage is a rung's own.
            rungs = internals.milestones(internals.trial_brackets(self)[trial.trial_id])
            if trial.trial_id in self._skipped and stage not in rungs:
                return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        # ASHA records a finished trial's last value at every rung it was not judged at; for a trial
        # that skipped a rung that would put its final metric among an earlier stage's values.
        if self._skipped.pop(trial.trial_id, None) is not None:
            internals.trial_brackets(self).pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._skipped.pop(trial.trial_id, None)
        super().on_trial_remove(tune_controller, trial)


def scheduler(space: SearchSpace, reduction_factor: int) -> TrialScheduler:
    """ASHA (StageASHA) with a rung at every stage boundary up to the metric's stage (FIFO for a
    one-stage search)."""
    final = final_iteration(space.metric)
    if final == 1:
        return FIFOScheduler()
    return StageASHA(
        time_attr="training_iteration", max_t=final, grace_period=1, reduction_factor=reduction_factor
    )


def log_fidelity(
    client: MlflowClient, storage: str, experiment: str, space: SearchSpace, run_id: str
) -> None:
    """The stage proxies' rank correlation with the final metric (tuner.search.study.proxy_fidelity), as
    metrics of the search's parent run."""
    try:
        study = load_study(storage, experiment)
        fidelity = proxy_fidelity(study, final_iteration(space.metric))
        retry(
            lambda c: log_metrics(c, run_id, fidelity, 0, int(time.time() * 1000)), client, "log fidelity", 60
        )
        log.info("proxy fidelity: %s", {k: round(v, 3) for k, v in fidelity.items()})
    except Exception as exc:  # an analysis: never the reason a finished search fails
        log.warning("proxy fidelity not computed: %s", exc)
