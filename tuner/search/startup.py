"""The first trials of a fresh study: the base config itself, then one trial per other method.

TPE's random start-up draws the method like any knob: with 8 method spaces and 10 start-up trials,
(7/8)^10 = 26% of the methods are never drawn before the model takes over, and a method the model
never saw is one it never proposes (search-review.md, W4). So the study starts with the base config
as trial 0 (the first space at the base config's values: the search then beats a known point, not
nothing) and one trial fixing only the method for each other space, its knobs drawn as usual. With
TPE's start-up at `STARTUP_TRIALS`, the model takes over after these instead of ten random trials
(Optuna counts only COMPLETE and PRUNED trials toward it).
"""

from __future__ import annotations

import math
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.spaces.ranges import Base, Param, contains
from tuner.spaces.space import CHOICE, SearchSpace

# TPE's random start-up (Optuna's default is 10): at least one trial per method comes first anyway.
STARTUP_TRIALS = 5


def encoded_value(param: Param, value: Any) -> Any | None:
    """`value` as the Optuna parameter of `param` holds it, or None where the range cannot give it
    (a base value outside a space's range, or off its step grid, is left to the sampler)."""
    dist = param.distribution
    if isinstance(dist, CategoricalDistribution):
        listed = list(value) if isinstance(value, tuple | list) else value
        return next((c for c in dist.choices if param.decode(c) == listed), None)
    assert isinstance(dist, FloatDistribution | IntDistribution)
    if isinstance(value, bool) or not isinstance(value, int | float) or not contains(param, value):
        return None
    if isinstance(dist, IntDistribution) and value != int(value):
        return None
    if dist.step is not None:
        steps = (value - dist.low) / dist.step
        if not math.isclose(steps, round(steps), abs_tol=1e-9):
            return None
    return int(value) if isinstance(dist, IntDistribution) else float(value)


def base_trial(space: SearchSpace, base: Base) -> dict[str, Any]:
    """The first space's parameters at the base config's values (those its ranges can give)."""
    first = space.spaces[0]
    fixed: dict[str, Any] = {CHOICE: first.name} if len(space.spaces) > 1 else {}
    named = [(f"{first.name}|{p.key}", p) for p in first.params] + [(p.key, p) for p in first.shared]
    for name, param in named:
        encoded = encoded_value(param, base.value(param.key, first.method))
        if encoded is not None:
            fixed[name] = encoded
    return fixed


def start_up(space: SearchSpace, base: Base) -> list[dict[str, Any]]:
    """The partial trials to enqueue on a fresh study, in order."""
    return [base_trial(space, base)] + [{CHOICE: s.name} for s in space.spaces[1:]]
