"""How well each stage's value ranks what comes out at the end: what ASHA's stops rest on.

Measured per upstream, not per trial: downstream trials copy a finished seed stage (tuner.search.reuse),
so per trial one seed value would stand for many finals and its rank correlation would be mostly ties
(search-review.md, B9). Each upstream (the seed knobs; for the refine stage, the seed and refine knobs)
is one point: its stage value against the mean final value of its trials. The rank correlation comes
with a 90% bootstrap interval over upstreams, and with the count of upstreams that have no final
value, mostly those the rung stopped: they are left out, so a high correlation among the survivors
says nothing about the range the rung cut (a range restriction), and a large count says so.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy.stats import spearmanr

import wsss
from tuner.search.reuse import STAGE_PARAMS, finished, group_by_upstream
from tuner.search.study import WARM_START
from tuner.spaces.space import CHOICE

RESAMPLES = 1000


def _rho(points: np.ndarray) -> float | None:
    if len(points) < 3 or len(set(points[:, 0])) < 2 or len(set(points[:, 1])) < 2:
        return None
    return float(spearmanr(points[:, 0], points[:, 1]).statistic)


def proxy_fidelity(
    study: optuna.Study, final_step: int, choice: str = CHOICE, seed: int = 0
) -> dict[str, float]:
    """Keys: `proxy_fidelity_trials` (completed trials), and per stage before the final one
    `proxy_fidelity_<stage>` (Spearman over upstreams with a final value), `..._ci_low` and
    `..._ci_high` (90% percentile bootstrap over those upstreams), `..._upstreams` (how many) and
    `..._unscored` (upstreams without a final value, left out). Warm-start copies are left out."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    own = [t for t in trials if WARM_START not in t.user_attrs]
    out: dict[str, float] = {"proxy_fidelity_trials": float(len(finished(own)))}
    rng = np.random.default_rng(seed)
    for step in range(1, final_step):
        name = f"proxy_fidelity_{wsss.STAGES[step - 1]}"
        scored, unscored = [], 0
        for group in group_by_upstream(trials, STAGE_PARAMS[:step], choice, step):
            finals = [float(t.value) for t in finished(group) if t.value is not None]
            if finals:
                proxy = float(np.mean([t.intermediate_values[step] for t in group]))
                scored.append((proxy, float(np.mean(finals))))
            else:
                unscored += 1
        out[f"{name}_upstreams"], out[f"{name}_unscored"] = float(len(scored)), float(unscored)
        points = np.array(scored, dtype=float).reshape(-1, 2)
        rho = _rho(points)
        if rho is None:
            continue
        out[name] = rho
        draws = [_rho(points[rng.integers(len(points), size=len(points))]) for _ in range(RESAMPLES)]
        kept = [d for d in draws if d is not None and np.isfinite(d)]
        if kept:
            out[f"{name}_ci_low"], out[f"{name}_ci_high"] = (float(v) for v in np.percentile(kept, [5, 95]))
    return out
