"""OptunaSearch that tells Optuna the truth about trials the scheduler stopped.

Ray's OptunaSearch tells Optuna COMPLETE with the last reported value for a trial that ASHA stopped at
a stage boundary (ray PR#5651), so TPE would be fitted on CAM or pseudo-mask scores as if they were
final val scores. Here such a trial is told PRUNED: its per-stage values stay as intermediate values,
and TPE treats it as worse than every completed trial.
"""

from __future__ import annotations

import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class StageAwareOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, final_iteration: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.final_iteration = final_iteration

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        reached = int((result or {}).get("training_iteration", 0) or 0)
        stopped_early = not error and result is not None and reached < self.final_iteration
        if stopped_early and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            log.info("trial %s stopped after stage %d: told Optuna PRUNED", trial_id, reached)
            return
        super().on_trial_complete(trial_id, result=result, error=error)
