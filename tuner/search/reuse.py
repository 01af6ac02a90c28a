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

"Promising": seed stages that led to a finished trial rank by their best final value; the others
follow, ranked by their stage value (the seed proxy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

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
    if name == choice:
        return "seed"
    key = name.split("|", 1)[-1]
    head = key.split(".", 1)[0]
    return head if head in ("refine", "segment") else "seed"


def _upstream(trial: FrozenTrial, stages: Sequence[str], choice: str) -> dict[str, Any]:
    return {k: v for k, v in trial.params.items() if param_stage(k, choice) in stages}


def _better(mode: str) -> Callable[[float, float], bool]:
    return (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)


def promising_upstreams(trials: Sequence[FrozenTrial], mode: str, choice: str) -> list[list[FrozenTrial]]:
    """Trials grouped by their seed knobs (groups whose seed stage finished), most promising first."""
    groups: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        if 1 in trial.intermediate_values:
            key = repr(sorted(_upstream(trial, ("seed",), choice).items()))
            groups.setdefault(key, []).append(trial)
    sign = 1.0 if mode == "max" else -1.0

    def rank(group: list[FrozenTrial]) -> tuple[int, float]:
        finals = [t.value for t in group if t.state == TrialState.COMPLETE and t.value is not None]
        if finals:  # best first: the largest of sign x value
            return (0, -max(sign * v for v in finals))
        return (1, -max(sign * t.intermediate_values[1] for t in group))

    return sorted(groups.values(), key=rank)


def choose_upstream(
    policy: ReusePolicy, trials: Sequence[FrozenTrial], mode: str, choice: str, rng: np.random.Generator
) -> tuple[str, dict[str, Any]] | None:
    """(the stage reused, the knobs to fix) for the next trial, or None for a fresh TPE trial."""
    groups = promising_upstreams(trials, mode, choice)
    if len(groups) < policy.warmup or rng.random() >= policy.fraction:
        return None
    group = groups[int(rng.integers(min(policy.top, len(groups))))]
    better = _better(mode)
    refined = [t for t in group if 2 in t.intermediate_values]
    if refined and rng.random() < 0.5:
        best = refined[0]
        for trial in refined[1:]:
            if better(trial.intermediate_values[2], best.intermediate_values[2]):
                best = trial
        return "refine", _upstream(best, STAGE_PARAMS, choice)
    return "seed", _upstream(group[0], ("seed",), choice)
