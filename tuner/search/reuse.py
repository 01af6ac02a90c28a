"""Stage-aware sampling: part of a search's trials reuse a finished upstream stage on purpose.

Every method space samples seed knobs continuously (the learning rate, the epochs), so two trials that
TPE proposes practically never share a seed stage, and the stage store would only pay off by luck.
Here, once `warmup` distinct seed stages have finished, each new trial is, with probability
`fraction`, a *downstream trial*: it copies all seed knobs (the method included) of one of the `top`
most promising finished seed stages, and with probability 1/2, when that stage's best trial also
finished refinement, its refinement knobs too. The rest of its knobs are TPE's (Optuna's partial
`enqueue_trial`). So its seed stage (and refinement) comes from the store and the trial costs only
what lies downstream.

Why this scheme: the enqueued trials are ordinary Optuna trials with every parameter and their final
value, so TPE keeps learning the end-to-end objective (it sees more samples near the best upstream
settings, which is the exploitation it would do anyway). It needs no coordination between trials:
the searcher decides at suggestion time from the finished trials it already knows, so any number of
trials may be in flight on any number of nodes; a downstream trial whose upstream is still being
written waits on the store's single-flight lock instead of computing it twice.

"Promising": seed stages that led to a finished trial rank by the mean of their final values (the
maximum would favour the most-copied stage: the maximum of 8 noisy draws sits about 1.4 sd above
one draw); the others follow, ranked by their stage value (the seed proxy). A seed stage on which the
scheduler stopped every trial that ran it is not reused: the rung rejected it; nor is a warm start's
copy (another search's trial, whose stages need not be in this store), which also does not count
toward the warm-up. Only stages strictly
upstream of the search's final one are reused, since fixing the final stage's knobs too would
propose an exact copy of a finished trial (a `pseudo_miou` search fixing seed and refinement, a
`cam_miou` search fixing the seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from tuner.search.study import WARM_START
from tuner.spaces.space import stage_of_key

STAGE_PARAMS = ("seed", "refine")  # the upstream stages a downstream trial may reuse


@dataclass(frozen=True)
class ReusePolicy:
    fraction: float = 0.75  # share of trials after the warm-up that reuse a finished upstream stage
    warmup: int = 3  # finished seed stages before the first reuse (TPE explores first)
    top: int = 3  # the upstream is drawn among this many of the most promising
    seed: int = 0

    def validate(self) -> None:
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"--reuse-fraction: must be within [0, 1], got {self.fraction}")
        if self.warmup < 1 or self.top < 1:
            raise ValueError("--reuse-warmup and the top count must be >= 1")


def param_stage(name: str, choice: str) -> str:
    """The stage a define-by-run parameter configures: `<space>|seed.train.lr` -> seed, `refine.beta`
    -> refine; the method choice, data and the RNG seed shape every stage, so they count as seed."""
    return "seed" if name == choice else stage_of_key(name.split("|", 1)[-1])


def upstream_knobs(trial: FrozenTrial, stages: Sequence[str], choice: str) -> dict[str, Any]:
    return {k: v for k, v in trial.params.items() if param_stage(k, choice) in stages}


def finished(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that reached the final stage (COMPLETE with a value)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]


def group_by_upstream(
    trials: Sequence[FrozenTrial], stages: Sequence[str], choice: str, step: int
) -> list[list[FrozenTrial]]:
    """Trials that reported stage `step`, grouped by their knobs of `stages` (one group per upstream
    artifact), warm starts' copies left out: they are another search's trials."""
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if step in trial.intermediate_values and WARM_START not in trial.user_attrs:
            key = repr(sorted(upstream_knobs(trial, stages, choice).items()))
            groups.setdefault(key, []).append(trial)
    return list(groups.values())


def _rejected(group: Sequence[FrozenTrial]) -> bool:
    """Every trial that ran this seed stage was stopped at its rung (PRUNED after stage 1)."""
    return all(t.state == TrialState.PRUNED and max(t.intermediate_values) == 1 for t in group)


def promising_upstreams(trials: Sequence[FrozenTrial], mode: str, choice: str) -> list[list[FrozenTrial]]:
    """Trials grouped by their seed knobs (groups whose seed stage finished and was not rejected at its
    rung), most promising first."""
    sign = 1.0 if mode == "max" else -1.0

    def rank(group: list[FrozenTrial]) -> tuple[int, float]:
        finals = [float(t.value) for t in finished(group) if t.value is not None]
        if finals:  # best first: the largest mean of sign x value
            return (0, -sign * float(np.mean(finals)))
        return (1, -max(sign * t.intermediate_values[1] for t in group))

    groups = group_by_upstream(trials, ("seed",), choice, 1)
    return sorted((g for g in groups if not _rejected(g)), key=rank)


def _best_refined(refined: Sequence[FrozenTrial], mode: str) -> FrozenTrial:
    """The group's trial whose refinement to copy: the best final value where some finished, else the
    best pseudo-mask value."""
    done = finished(refined)
    pool, score = (done, lambda t: t.value) if done else (refined, lambda t: t.intermediate_values[2])
    return max(pool, key=score) if mode == "max" else min(pool, key=score)


def reusable_stages(final_iteration: int) -> tuple[str, ...]:
    """The stages a downstream trial may copy in a search whose metric is stage `final_iteration`'s
    (1 seed, 2 refine, 3 segment): those strictly upstream of it."""
    return STAGE_PARAMS[: max(final_iteration - 1, 0)]


def choose_upstream(
    policy: ReusePolicy,
    trials: Sequence[FrozenTrial],
    mode: str,
    choice: str,
    rng: np.random.Generator,
    final_iteration: int = 3,
) -> tuple[str, dict[str, Any]] | None:
    """(the stage reused, the knobs to fix) for the next trial, or None for a fresh TPE trial."""
    stages = reusable_stages(final_iteration)
    if not stages:
        return None
    groups = promising_upstreams(trials, mode, choice)
    if len(groups) < policy.warmup or rng.random() >= policy.fraction:
        return None
    group = groups[int(rng.integers(min(policy.top, len(groups))))]
    refined = [t for t in group if 2 in t.intermediate_values]
    if "refine" in stages and refined and rng.random() < 0.5:
        return "refine", upstream_knobs(_best_refined(refined, mode), STAGE_PARAMS, choice)
    return "seed", upstream_knobs(group[0], ("seed",), choice)
