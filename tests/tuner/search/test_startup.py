"""A fresh study's first trials (tuner.search.startup): the base config, then every other method once,
before TPE's start-up of STARTUP_TRIALS random trials."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.search.startup import STARTUP_TRIALS, encoded_value, start_up
from tuner.search.strategy import STARTUP_KEY, make_searcher
from tuner.spaces.space import CHOICE, Base, Param, load_search

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"
METHODS = ["cam", "mixup", "fmix", "manifold_mixup", "seam", "cpn", "sc_cam", "sc_teach"]


def test_every_method_comes_first_once_and_trial_zero_is_the_base_config(tmp_path: Path) -> None:
    """With 8 methods and TPE's default 10 random start-up trials, (7/8)^10 = 26% of methods were
    never drawn before the model took over."""
    space = load_search([SPACES / f"{m}.yaml" for m in METHODS], Base())
    searcher = make_searcher(
        space, experiment="e", storage=str(tmp_path), seed=0, reuse_fraction=0.75, reuse_warmup=1,
        warm_start_from=None,
    )  # fmt: skip
    configs = [searcher.suggest(f"t{n}") for n in range(len(METHODS) + 1)]
    assert [c[CHOICE] for c in configs[: len(METHODS)]] == METHODS
    base = Base()
    first = space.spaces[0]
    for param in first.params:  # the cam space's own knobs at the defaults' values
        expected = base.value(param.key, "cam")
        assert param.decode(configs[0][f"cam|{param.key}"]) == pytest.approx(expected), param.key
    for param in first.shared:
        if encoded_value(param, base.value(param.key, "cam")) is not None:
            assert param.decode(configs[0][param.key]) == base.value(param.key, "cam"), param.key
    study = searcher._ot_study
    assert all(t.user_attrs.get(STARTUP_KEY) for t in study.trials[: len(METHODS)])
    assert STARTUP_KEY not in study.trials[len(METHODS)].user_attrs
    assert study.sampler._n_startup_trials == STARTUP_TRIALS
    # No reuse was planned while start-up trials waited (each enqueued trial is a start-up one).
    assert all(c["wsss_reuse"] == "-" for c in configs[: len(METHODS)])


def test_a_continued_study_gets_no_second_start_up(tmp_path: Path) -> None:
    space = load_search([SPACES / "cam.yaml", SPACES / "seam.yaml"], Base())
    kwargs = {"experiment": "e", "storage": str(tmp_path), "seed": 0, "reuse_fraction": 0.0,
              "reuse_warmup": 1, "warm_start_from": None}  # fmt: skip
    searcher = make_searcher(space, **kwargs)
    for n in range(2):
        searcher.suggest(f"t{n}")
        searcher.on_trial_complete(f"t{n}", {"objective": 0.5, "training_iteration": 3})
    again = make_searcher(space, **kwargs)
    study = again._ot_study
    assert len(study.trials) == 2
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))


def test_a_base_value_the_range_cannot_give_is_left_to_the_sampler() -> None:
    assert encoded_value(Param("k", FloatDistribution(0.1, 1.0)), 0.05) is None
    assert encoded_value(Param("k", FloatDistribution(0.0, 1.0, step=0.25)), 0.3) is None
    assert encoded_value(Param("k", FloatDistribution(0.0, 1.0, step=0.25)), 0.5) == 0.5
    assert encoded_value(Param("k", IntDistribution(1, 8)), 4) == 4
    assert encoded_value(Param("k", CategoricalDistribution(["a", "b"])), "c") is None
    listed = Param("k", CategoricalDistribution(["[1, 2]", "[2]"]), json_choices=True)
    assert encoded_value(listed, (1, 2)) == "[1, 2]"
    assert start_up(load_search([SPACES / "cam.yaml"], Base()), Base())[0].get(CHOICE) is None
