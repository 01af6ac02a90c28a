"""The persistent study of an experiment: warm start, Optuna's analysis plots, proxy fidelity."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

import wsss
from tuner.search.fidelity import proxy_fidelity
from tuner.search.study import (
    IDENTITY,
    claim,
    load,
    search_identity,
    study_path,
    study_storage,
    warm_start,
    write_report,
)


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


VAL = search_identity("val_miou", "max", ["abc"], None)


def test_a_study_records_what_its_values_are_and_refuses_another_search(tmp_path: Path) -> None:
    study = _study(str(tmp_path), "exp", 2)
    claim(study, VAL)
    claim(load(str(tmp_path), "exp"), VAL)  # the same search again: fine
    assert load(str(tmp_path), "exp").user_attrs[IDENTITY] == VAL
    pseudo = search_identity("pseudo_miou", "min", ["abc"], None)
    with pytest.raises(wsss.WsssError, match=r"'val_miou' there, 'pseudo_miou' here; mode 'max' there"):
        claim(load(str(tmp_path), "exp"), pseudo)
    other_base = search_identity("val_miou", "max", ["abc"], {"seed": {"train": {"lr": 0.1}}})
    assert other_base["base"] != VAL["base"] and other_base["base"] != "defaults"


def test_warm_start_refuses_another_metric_direction_or_an_unrecorded_study(tmp_path: Path) -> None:
    """A minimize pseudo_miou study seeded a maximize val_miou one: its 0.60 became the best final."""
    target = optuna.create_study(study_name="new", storage=study_storage(study_path(str(tmp_path), "new")))
    claim(target, VAL)
    old = _study(str(tmp_path), "old", 4)
    with pytest.raises(wsss.WsssError, match="--warm-start old: its study does not record"):
        warm_start(target, old, identity=VAL)
    claim(old, search_identity("pseudo_miou", "min", ["abc"], None))
    with pytest.raises(wsss.WsssError, match="--warm-start old: its trials are another search's"):
        warm_start(target, old, identity=VAL)
    assert len(target.trials) == 0
    same = _study(str(tmp_path), "same", 4)
    claim(same, VAL)
    assert warm_start(target, same, identity=VAL) == 4


def test_warm_start_leaves_out_trials_outside_the_search_space(tmp_path: Path) -> None:
    """Optuna runs an enqueued out-of-range value as it is (5.0 for suggest_float('x', 0, 1))."""
    source = _study(str(tmp_path), "old", 6)  # x and y in {0, 1/6, ..., 5/6}
    target = optuna.create_study(study_name="new", storage=study_storage(study_path(str(tmp_path), "new")))
    space = {"x": FloatDistribution(0.0, 0.5), "y": FloatDistribution(0, 1)}
    assert warm_start(target, source, space) == 4  # x 0, 1/6, 2/6, 3/6
    assert all(t.params["x"] <= 0.5 for t in target.trials)
    assert warm_start(target, source, {"x": FloatDistribution(0, 1)}) == 0  # y is not a knob here


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
    low, high = noisy["proxy_fidelity_seed_ci_low"], noisy["proxy_fidelity_seed_ci_high"]
    assert low < noisy["proxy_fidelity_seed"] < high and high - low > 0.3  # ten points: a wide interval


def test_proxy_fidelity_counts_each_upstream_once_and_says_what_it_left_out(tmp_path: Path) -> None:
    """Downstream copies of one seed stage made many ties of one seed value; the upstreams the rung
    stopped have no final value, so the correlation is over the survivors only, and says so."""
    study = optuna.create_study(direction="maximize")
    dists = {"lr": FloatDistribution(0, 1), "refine.beta": FloatDistribution(0, 20)}

    def add(lr: float, beta: float, steps: dict[int, float], final: float | None) -> None:
        state = TrialState.COMPLETE if final is not None else TrialState.PRUNED
        params = {"lr": lr, "refine.beta": beta}
        study.add_trial(
            create_trial(
                state=state, value=final, params=params, distributions=dists, intermediate_values=steps
            )
        )

    for n, lr in enumerate((0.1, 0.2, 0.3, 0.4)):  # seed value rises with the mean final
        for beta in (4.0, 8.0, 12.0):  # three downstream trials per upstream
            add(lr, beta, {1: 0.5 + 0.1 * n, 2: 0.4 + beta / 100}, 0.3 + 0.1 * n + beta / 1000)
    add(0.9, 4.0, {1: 0.1}, None)  # stopped at the seed rung
    out = proxy_fidelity(study, final_step=3)
    assert out["proxy_fidelity_trials"] == 12
    assert out["proxy_fidelity_seed_upstreams"] == 4 and out["proxy_fidelity_seed_unscored"] == 1
    assert out["proxy_fidelity_seed"] == pytest.approx(1.0)
    assert out["proxy_fidelity_refine_upstreams"] == 12 and out["proxy_fidelity_refine_unscored"] == 0


def test_a_journal_snapshot_keeps_whole_lines_and_comes_back_where_the_journal_is_missing(
    tmp_path: Path,
) -> None:
    """Tune's checkpoint of the searcher carries the study's journal (a line a write left half done is
    left out), and a resume on a new head puts it back where the journal belongs."""
    from tuner.search.study import STUDY_SNAPSHOT, fetch_snapshot, snapshot_journal

    journal = tmp_path / "head" / "optuna" / "x.journal"
    journal.parent.mkdir(parents=True)
    journal.write_bytes(b'{"op": 0}\n{"op": 1}\n{"op": 2, "half')
    experiment = tmp_path / "tune" / "search-1"
    experiment.mkdir(parents=True)
    snapshot_journal(journal, experiment)
    assert (experiment / STUDY_SNAPSHOT).read_bytes() == b'{"op": 0}\n{"op": 1}\n'
    new_head = tmp_path / "new-head" / "optuna" / "x.journal"
    assert fetch_snapshot(str(experiment), new_head) and new_head.read_bytes() == b'{"op": 0}\n{"op": 1}\n'
    assert not fetch_snapshot(str(tmp_path / "tune" / "no-such-search"), tmp_path / "other.journal")
