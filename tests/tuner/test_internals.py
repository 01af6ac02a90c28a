"""The private Ray Tune and Optuna attributes tuner/ relies on (tuner/internals.py) exist on the installed
versions: each owner is built for real and every name checked, so an upgrade that renames one fails
here, by name, instead of deep inside a search."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.schedulers.async_hyperband import _Bracket
from ray.tune.search.optuna import OptunaSearch

from tuner import internals

TUNER = Path(__file__).resolve().parents[2] / "tuner"


def _study() -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))


OWNERS: dict[str, Callable[[], Any]] = {
    "ray.tune.search.optuna.OptunaSearch": lambda: OptunaSearch(
        space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="max"
    ),
    "ray.tune.schedulers.AsyncHyperBandScheduler": lambda: AsyncHyperBandScheduler(
        time_attr="training_iteration", max_t=3, grace_period=1, reduction_factor=2
    ),
    "ray.tune.schedulers.async_hyperband._Bracket": lambda: _Bracket(
        min_t=1, max_t=3, reduction_factor=2, s=0
    ),
    "ray.tune.Tuner": lambda: tune.Tuner(lambda config: None),
    "ray.tune.impl.tuner_internal.TunerInternal": lambda: tune.Tuner(lambda config: None)._local_tuner,
    "optuna.Study": _study,
    "optuna.Trial": lambda: _study().ask(),
}


def test_every_owner_is_built_here() -> None:
    assert set(OWNERS) == set(internals.PRIVATE)


@pytest.mark.parametrize(
    ("owner", "name"), [(o, n) for o, names in internals.PRIVATE.items() for n in names], ids=lambda v: v
)
def test_the_private_attribute_exists(owner: str, name: str) -> None:
    built = OWNERS[owner]()
    assert type(built).__module__.split(".")[0] == owner.split(".")[0]
    assert hasattr(built, name), f"{owner} has no {name} on this version: tuner/internals.py needs updating"


def test_the_accessors_read_what_they_name() -> None:
    scheduler = OWNERS["ray.tune.schedulers.AsyncHyperBandScheduler"]()
    assert internals.time_attr(scheduler) == "training_iteration" and internals.max_t(scheduler) == 3
    assert internals.milestones(OWNERS["ray.tune.schedulers.async_hyperband._Bracket"]()) == [2, 1]
    searcher = OWNERS["ray.tune.search.optuna.OptunaSearch"]()
    assert isinstance(internals.study(searcher), optuna.Study) and internals.trials(searcher) == {}
    assert internals.trial_id(OWNERS["optuna.Trial"]()) == 0


def test_no_other_module_touches_a_private_ray_or_optuna_attribute() -> None:
    """Outside tuner/internals.py, no `x._name` access whose name is one of the private names used."""
    private = {name for names in internals.PRIVATE.values() for name in names if name.startswith("_")}
    for path in TUNER.rglob("*.py"):
        if path.name == "internals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                where = f"{path.relative_to(TUNER)}:{node.lineno}"
                pytest.fail(f"{where} uses {node.attr}; go through tuner.internals")
