"""The persistent study of an experiment: warm start, Optuna's analysis plots, proxy fidelity."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

import wsss
from tuner.search.study import load, proxy_fidelity, study_path, study_storage, warm_start, write_report


def _study(storage: str, name: str, trials: int, proxy_noise: float = 0.0) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=study_storage(study_path(storage, name)),
        direction="maximize",
        load_if_exists=True,
    )
    for n in range(trials):
        x, y = n / trials, (n * 7 % trials) / trials
        final = x - 0.2 * y
        steps = {1: final + proxy_noise * ((-1) ** n), 2: final}
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=final,
                params={"x": x, "y": y},
                distributions={"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)},
                intermediate_values=steps,
            )
        )
    return study


def test_the_study_outlives_the_search_and_loads_by_experiment(tmp_path: Path) -> None:
    _study(str(tmp_path), "exp/1", 5)
    assert study_path(str(tmp_path), "exp/1").name == "exp_1.journal"
    assert len(load(str(tmp_path), "exp/1").trials) == 5
    assert (
        len(
            optuna.load_study(
                study_name="exp/1", storage=study_storage(study_path(str(tmp_path), "exp/1"))
            ).trials
        )
        == 5
    )
    with pytest.raises(wsss.WsssError, match="no Optuna study"):
        load(str(tmp_path), "missing")


def test_warm_start_copies_finished_trials_that_fit(tmp_path: Path) -> None:
    source = _study(str(tmp_path), "old", 6)
    target = optuna.create_study(study_name="new", storage=study_storage(study_path(str(tmp_path), "new")))
    target.add_trial(
        create_trial(
            state=TrialState.COMPLETE,
            value=0.0,
            params={"x": 5.0},
            distributions={"x": FloatDistribution(0, 10)},
        )
    )
    copied = warm_start(target, source)
    assert copied == 6 and len(target.trials) == 7
    assert target.trials[-1].user_attrs["wsss_warm_start"] == "old"
    assert target.trials[-1].intermediate_values == source.trials[-1].intermediate_values
    target.ask()  # the sampler works on the copied trials
    assert warm_start(target, source) == 0 and len(target.trials) == 8  # nothing copied twice
    _study(str(tmp_path), "old", 2)  # the source experiment searched on: only its new trials come
    assert warm_start(target, load(str(tmp_path), "old")) == 2


def test_report_writes_importances_history_and_parallel_coordinates(tmp_path: Path) -> None:
    written = write_report(_study(str(tmp_path), "r", 8), tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == sorted(
        f"{n}.{ext}"
        for n in ("param_importances", "optimization_history", "parallel_coordinate")
        for ext in ("png", "html")
    )
    assert all(p.stat().st_size > 1000 for p in written)
    with pytest.raises(wsss.WsssError, match="at least 2"):
        write_report(_study(str(tmp_path), "tiny", 1), tmp_path / "none")


def test_proxy_fidelity_is_the_rank_correlation_with_the_final_value(tmp_path: Path) -> None:
    exact = proxy_fidelity(_study(str(tmp_path), "a", 10), final_step=3)
    assert exact["proxy_fidelity_seed"] == pytest.approx(1.0) and exact[
        "proxy_fidelity_refine"
    ] == pytest.approx(1.0)
    assert exact["proxy_fidelity_trials"] == 10
    noisy = proxy_fidelity(_study(str(tmp_path), "b", 10, proxy_noise=0.5), final_step=3)
    assert noisy["proxy_fidelity_seed"] < 0.6 and noisy["proxy_fidelity_refine"] == pytest.approx(1.0)
