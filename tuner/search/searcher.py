"""OptunaSearch that tells Optuna the truth about stage-wise trials, and plans stage reuse.

- Ray's OptunaSearch tells Optuna COMPLETE with the last reported value for a trial that ASHA stopped
  at a stage boundary (ray PR#5651), so TPE would be fitted on CAM or pseudo-mask scores as if they
  were final. Here such a trial is told PRUNED. Tune 2.60 does not pass the result that made the
  scheduler stop a trial to `on_trial_result`, only to `on_trial_complete`
  (TuneController._process_trial_result), so that value is reported here first: the pruned trial
  keeps every stage value it reached as an intermediate value.
- A retried trial (its node was lost) reports its stages again; steps Optuna already holds are skipped
  instead of logging Optuna's "already reported" warning.
- With a `ReusePolicy`, part of the trials reuse a finished seed (or seed + refine) stage on purpose
  (tuner.search.reuse); the trial's Tune config says which (`wsss_reuse`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.pruners import NopPruner
from optuna.storages import JournalStorage
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

import wsss
from tuner import internals
from tuner.search.reuse import ReusePolicy, choose_upstream
from tuner.search.study import snapshot_journal, study_storage
from tuner.trial.trainable import REUSE_KEY

log = logging.getLogger(__name__)


class StageAwareOptunaSearch(OptunaSearch):
    def __init__(
        self,
        *args: Any,
        final_iteration: int,
        reuse: ReusePolicy | None = None,
        choice: str = "space",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.final_iteration = final_iteration
        self.reuse, self.choice = reuse, choice
        self.study_file: str | None = None  # the journal's path (make_searcher; resume moves it)
        self.rng = np.random.default_rng(reuse.seed if reuse else 0)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        planned, study = None, internals.study(self)
        # No reuse while enqueued start-up trials wait: Optuna hands out the oldest waiting trial first.
        if (
            self.reuse is not None
            and trial_id not in internals.trials(self)
            and study is not None
            and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        ):
            planned = choose_upstream(
                self.reuse,
                study.get_trials(deepcopy=False),
                self.mode,
                self.choice,
                self.rng,
                self.final_iteration,
            )
            if planned is not None:
                study.enqueue_trial(planned[1], user_attrs={REUSE_KEY: planned[0]})
        config = super().suggest(trial_id)
        if config is not None:
            attrs = internals.trials(self)[trial_id].user_attrs
            config[REUSE_KEY] = attrs.get(REUSE_KEY, "-")
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = internals.trials(self).get(trial_id)
        step = result.get("training_iteration")
        if trial is not None and step in self._reported(trial_id):
            return  # a retried trial reporting a stage again
        super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        reached = int((result or {}).get("training_iteration", 0) or 0)
        known = trial_id in internals.trials(self) and trial_id not in internals.completed(self)
        value = result.get(self.metric) if result and not error else None
        if known and value is not None and reached and reached not in self._reported(trial_id):
            # The value the scheduler stopped it on (or the final one): Tune passed it here only.
            internals.trials(self)[trial_id].report(float(value), reached)
        if known and value is not None and reached < self.final_iteration:
            self._study().tell(internals.trials(self)[trial_id], state=TrialState.PRUNED)
            internals.completed(self).add(trial_id)
            log.info("trial %s stopped after stage %d: told Optuna PRUNED", trial_id, reached)
            return
        super().on_trial_complete(trial_id, result=result, error=error)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Tune's checkpoint of the searcher, and beside it a snapshot of the study's journal, which
        Tune keeps in the storage with it (tuner.search.study.STUDY_SNAPSHOT)."""
        super().save_to_dir(checkpoint_dir, session_str)
        if self.study_file and Path(self.study_file).is_file():
            snapshot_journal(Path(self.study_file), Path(checkpoint_dir))

    def restore(self, checkpoint_path: str) -> None:
        """Tune's restore, then the study reopened from `study_file` when resume set it: a search
        resumed from a copy of its storage folder must write the copy's journal, not the original's."""
        moved = self.__dict__.get("study_file")
        super().restore(checkpoint_path)
        if moved:
            self.study_file = moved
            self._reopen(Path(moved))

    def _reopen(self, path: Path) -> None:
        current = internals.study(self)
        if current is None or not isinstance(internals.storage(current), JournalStorage):
            return  # a searcher saved before studies were kept on disk: its study is in the pickle
        if not path.is_file():
            raise wsss.WsssError(
                f"{path}: the search's Optuna study is missing; copy STORAGE/optuna/ along with the storage"
            )
        study = optuna.load_study(
            study_name=internals.study_name(self),
            storage=study_storage(path),
            sampler=internals.sampler(self),
            pruner=NopPruner(),
        )
        internals.set_trials(
            self,
            {tid: optuna.Trial(study, internals.trial_id(t)) for tid, t in internals.trials(self).items()},
        )
        internals.set_study(self, study)

    def _reported(self, trial_id: str) -> set[int]:
        number = internals.trials(self)[trial_id].number
        return set(self._study().get_trials(deepcopy=False)[number].intermediate_values)

    def _study(self) -> optuna.Study:
        study = internals.study(self)
        if study is None:
            raise RuntimeError("the searcher has no Optuna study yet (Tune sets it up before suggesting)")
        return study

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Searchers pickled before reuse existed restore without it.
        defaults = {"reuse": None, "choice": "space", "rng": np.random.default_rng(0), "study_file": None}
        self.__dict__.update(defaults | state)
