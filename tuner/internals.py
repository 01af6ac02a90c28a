"""Every use of a private attribute of Ray Tune or Optuna, in one module.

The searcher (tuner.search.searcher) subclasses Tune's OptunaSearch and reaches its study and trials;
StageASHA (tuner.search.strategy) reads ASHA's rungs; resume (tuner.search.resume) swaps the restored
Tuner's callbacks, for which Ray 2.60 has no public way. The versions these were written against are
pinned in pyproject.toml (ray[tune] 2.60, optuna 5); tests/tuner/test_internals.py builds each owner
on the installed versions and checks every name in PRIVATE, so an upgrade that renames one fails
there, naming the owner and the attribute.
"""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.schedulers.async_hyperband import _Bracket

# owner (as the test builds it) -> the private attributes used through this module
PRIVATE: dict[str, tuple[str, ...]] = {
    "ray.tune.search.optuna.OptunaSearch": (
        "_ot_study",
        "_ot_trials",
        "_completed_trials",
        "_study_name",
        "_sampler",
    ),
    "ray.tune.schedulers.AsyncHyperBandScheduler": ("_time_attr", "_max_t", "_trial_info", "_brackets"),
    "ray.tune.schedulers.async_hyperband._Bracket": ("_rungs", "cutoff"),
    "ray.tune.Tuner": ("_local_tuner",),
    "ray.tune.impl.tuner_internal.TunerInternal": ("_tune_config", "get_run_config"),
    "optuna.Study": ("_storage",),
    "optuna.Trial": ("_trial_id",),
}


# OptunaSearch: its study and the Optuna trial of each Tune trial.
def study(searcher: Any) -> optuna.Study | None:
    return searcher._ot_study


def set_study(searcher: Any, value: optuna.Study) -> None:
    searcher._ot_study = value


def trials(searcher: Any) -> dict[str, optuna.Trial]:
    return searcher._ot_trials


def set_trials(searcher: Any, value: dict[str, optuna.Trial]) -> None:
    searcher._ot_trials = value


def completed(searcher: Any) -> set[str]:
    """Tune trial ids the searcher has told Optuna about."""
    return searcher._completed_trials


def study_name(searcher: Any) -> str:
    return searcher._study_name


def sampler(searcher: Any) -> optuna.samplers.BaseSampler:
    return searcher._sampler


def storage(value: optuna.Study) -> optuna.storages.BaseStorage:
    return value._storage


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of an Optuna trial (not its number)."""
    return trial._trial_id


# ASHA (AsyncHyperBandScheduler): what it compares and where a trial's rungs are.
def time_attr(scheduler: Any) -> str:
    return scheduler._time_attr


def max_t(scheduler: Any) -> int:
    return scheduler._max_t


def trial_brackets(scheduler: Any) -> dict[str, Any]:
    """Tune trial id -> the ASHA bracket the trial is in."""
    return scheduler._trial_info


def milestones(bracket: Any) -> list[int]:
    return [milestone for milestone, _ in bracket._rungs]


def rungs(bracket: Any) -> list[tuple[int, dict[str, float]]]:
    """(milestone, {trial id: signed value recorded there}) for each rung, the latest first."""
    return bracket._rungs


def brackets(scheduler: Any) -> list[Any]:
    return scheduler._brackets


class RungBracket(_Bracket):
    """An ASHA bracket with a rung at each of `milestones` (Ray places them at grace * rf^k, which on a
    3-stage search leaves no refine rung for rf >= 3), whose rungs stop nothing until they hold
    `min_records` records: Ray's cutoff on one record stops the second trial at a rung whenever it
    falls below the first."""

    def __init__(self, milestones: list[int], reduction_factor: float, min_records: int) -> None:
        super().__init__(min_t=1, max_t=max(milestones), reduction_factor=reduction_factor, s=0)
        self._rungs = [(milestone, {}) for milestone in sorted(set(milestones), reverse=True)]
        self.min_records = min_records

    def cutoff(self, recorded: dict) -> Any:
        return super().cutoff(recorded) if len(recorded) >= self.min_records else None


def set_brackets(scheduler: Any, brackets: list[Any]) -> None:
    scheduler._brackets = brackets


# Tuner.restore: the restored searcher and run config (callbacks).
def restored_searcher(tuner: Any) -> Any:
    return tuner._local_tuner._tune_config.search_alg


def restored_scheduler(tuner: Any) -> Any:
    return tuner._local_tuner._tune_config.scheduler


def restored_run_config(tuner: Any) -> Any:
    return tuner._local_tuner.get_run_config()
