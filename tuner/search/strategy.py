"""How a search proposes and stops trials: the sampler, the stage-aware searcher on the experiment's
persistent study, the scheduler whose rungs are the stages up to the metric's, and the proxies'
fidelity logged when the search ends."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from tuner import internals
from tuner.search.fidelity import proxy_fidelity
from tuner.search.options import SearchOptions
from tuner.search.reuse import ReusePolicy
from tuner.search.searcher import StageAwareOptunaSearch
from tuner.search.staged_search import staged_searcher
from tuner.search.startup import STARTUP_TRIALS, start_up
from tuner.search.study import WARM_START, claim, study_path, study_storage, warm_start
from tuner.search.study import load as load_study
from tuner.spaces.space import CHOICE, Base, SearchSpace
from tuner.tracking.runs import log_metrics
from tuner.tracking.write_queue import retry
from tuner.trial.trainable import REUSE_KEY, STAGE_CACHED, final_iteration

log = logging.getLogger(__name__)

STARTUP_KEY = "wsss_startup"  # user attribute of the start-up trials a fresh study is given


def sampler(seed: int) -> optuna.samplers.TPESampler:
    """Multivariate TPE with `group=True`: each method's own knobs exist only under that method, and
    without groups TPE falls back to sampling such conditional parameters independently. The constant
    liar keeps trials in flight from being proposed again by parallel suggestions."""
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=STARTUP_TRIALS
    )


def make_searcher(
    space: SearchSpace,
    *,
    experiment: str,
    storage: str,
    seed: int,
    reuse_fraction: float,
    reuse_warmup: int,
    warm_start_from: str | None,
    identity: dict[str, str] | None = None,
    base: Base | None = None,
) -> StageAwareOptunaSearch:
    """The searcher, on the experiment's persistent study (tuner.search.study): a search in an experiment that
    was searched before continues its study (if its `identity`, tuner.search.study.search_identity,
    is the study's), and `warm_start_from` (`--warm-start`) copies another experiment's trials of the
    same identity that lie in this search's space. A fresh study starts with the base config and one
    trial per other method (tuner.search.startup)."""
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
    searcher.study_file = str(study_path(storage, experiment))
    study = internals.study(searcher)
    assert study is not None  # OptunaSearch makes its study when given a space
    fresh = not study.get_trials(deepcopy=False)
    if identity is not None:
        claim(study, identity)
    if warm_start_from:
        warm_start(study, load_study(storage, warm_start_from), space.distributions(), identity)
    if fresh:
        for params in start_up(space, base or Base()):
            study.enqueue_trial(params, user_attrs={STARTUP_KEY: True})
    return searcher


def min_records(reduction_factor: int, given: int | None = None) -> int:
    """Records a rung holds before it stops anything: `given` (`--rung-records`), else at least 4 and
    at least one per 1/rf kept."""
    return given if given is not None else max(reduction_factor, 4)


class StageASHA(ASHAScheduler):
    """ASHA with a rung at every stage boundary before the last of `stages`, whatever the reduction
    factor, each stopping nothing until it holds `min_records(reduction_factor)` records
    (tuner.internals.RungBracket), and that judges a trial at a stage boundary only on a stage the
    trial computed itself.

    A stage read from the store was judged at its rung when the trial that computed it reported it.
    A downstream trial (tuner.search.reuse) copies an upstream chosen for its end-to-end value; judging it
    again on the seed proxy (weakly correlated with val mIoU on small sets) stopped such trials at
    once, before they tested any knob of their own, and recorded the same value once per copy,
    pulling the rung's cutoff toward the most-copied upstream. Such a report continues the trial
    unrecorded; its first computed stage is judged at that stage's rung as usual."""

    def __init__(
        self,
        stages: int,
        reduction_factor: int = 2,
        records: int | None = None,
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        if stages < 2:
            raise ValueError(f"StageASHA needs at least 2 stages to judge between, got {stages}")
        super().__init__(
            time_attr="training_iteration",
            metric=metric,
            mode=mode,
            max_t=stages,
            grace_period=1,
            reduction_factor=reduction_factor,
        )
        needed = min_records(reduction_factor, records)
        internals.set_brackets(
            self, [internals.RungBracket(list(range(1, stages)), reduction_factor, needed)]
        )
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

    def restore_rungs(self, trials: Sequence[FrozenTrial], mode: str) -> int:
        """Refill the rungs from the study after `wsss-tune resume`: Tune 2.60 leaves the scheduler out
        of the state it saves (tune_controller.py, `save_to_dir`), so a resumed search's rungs would
        start empty and judge nothing until they fill again. Each finished trial (COMPLETE or PRUNED,
        not a warm start's copy) is recorded at each rung of a stage it computed itself, as it was
        before. Returns how many records were made."""
        sign = 1.0 if mode == "max" else -1.0
        reused_up_to = {"seed": 1, "refine": 2}  # a downstream trial's copied stages were not judged
        made = 0
        for bracket in internals.brackets(self):
            for milestone, recorded in internals.rungs(bracket):
                for trial in trials:
                    own = milestone > reused_up_to.get(str(trial.user_attrs.get(REUSE_KEY)), 0)
                    finished = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
                    copy = WARM_START in trial.user_attrs
                    if finished and own and not copy and milestone in trial.intermediate_values:
                        recorded[f"study-{trial.number}"] = sign * trial.intermediate_values[milestone]
                        made += 1
        return made

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._skipped.pop(trial.trial_id, None)
        super().on_trial_remove(tune_controller, trial)


def scheduler(space: SearchSpace, reduction_factor: int, records: int | None = None) -> TrialScheduler:
    """ASHA (StageASHA) with a rung at every stage boundary before the metric's stage (FIFO for a
    one-stage search)."""
    final = final_iteration(space.metric)
    if final == 1:
        return FIFOScheduler()
    return StageASHA(final, reduction_factor, records)


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


def search_parts(
    space: SearchSpace, options: SearchOptions, base: Base, identity: dict[str, str]
) -> tuple[Searcher, TrialScheduler]:
    """Tune's searcher and scheduler for `--searcher`: the stage-aware TPE searcher with StageASHA, or
    the staged searcher (its planner promotes; Tune runs its jobs first in, first out)."""
    if options.searcher == "staged":
        return staged_searcher(space, options, base), FIFOScheduler()
    searcher = make_searcher(
        space,
        experiment=options.experiment,
        storage=options.storage,
        seed=options.seed,
        reuse_fraction=options.reuse_fraction,
        reuse_warmup=options.reuse_warmup,
        warm_start_from=options.warm_start,
        identity=identity,
        base=base,
    )
    return searcher, scheduler(space, options.asha_reduction_factor, options.rung_records)
