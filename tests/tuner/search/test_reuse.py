"""Stage-aware sampling (tuner.search.reuse): which finished upstream stages later trials reuse."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tuner.search.reuse import ReusePolicy, choose_upstream, param_stage, promising_upstreams
from tuner.search.searcher import StageAwareOptunaSearch
from tuner.search.study import WARM_START
from tuner.trial.trainable import REUSE_KEY

DISTS = {
    "space": CategoricalDistribution(["cam", "mixup"]),
    "cam|seed.train.lr": FloatDistribution(0.01, 1.0),
    "refine.beta": FloatDistribution(4.0, 16.0),
    "segment.train.lr": FloatDistribution(1e-4, 1e-2),
}


def _trial(
    lr: float,
    seed_value: float,
    refine_value: float | None,
    final: float | None,
    state: TrialState | None = None,
    beta: float | None = None,
) -> optuna.trial.FrozenTrial:
    steps = {1: seed_value} | ({2: refine_value} if refine_value is not None else {})
    beta = 8.0 + lr if beta is None else beta
    params = {"space": "cam", "cam|seed.train.lr": lr, "refine.beta": beta, "segment.train.lr": 1e-3}
    if state is None:  # (TrialState.RUNNING is 0, so not `state or ...`)
        state = TrialState.COMPLETE if final is not None else TrialState.PRUNED
    return create_trial(
        state=state, value=final, params=params, distributions=DISTS, intermediate_values=steps
    )


def test_parameters_belong_to_the_stage_they_configure() -> None:
    assert param_stage("space", "space") == "seed"
    assert param_stage("cam|seed.train.lr", "space") == "seed"
    assert param_stage("cam|seed.params.alpha", "space") == "seed"
    assert param_stage("refine.beta", "space") == "refine"
    assert param_stage("cam|refine.rw_alpha", "space") == "refine"
    assert param_stage("segment.train.lr", "space") == "segment"
    assert param_stage("data.train_split", "space") == "seed"  # data shapes every stage


def _order(trials: list[optuna.trial.FrozenTrial], mode: str) -> list[float]:
    return [g[0].params["cam|seed.train.lr"] for g in promising_upstreams(trials, mode, "space")]


def test_upstreams_with_a_final_value_rank_first_then_by_stage_value() -> None:
    running = _trial(0.1, 0.9, None, None, state=TrialState.RUNNING)
    trials = [running, _trial(0.2, 0.5, 0.6, 0.40), _trial(0.3, 0.6, 0.7, 0.45)]
    assert _order(trials, "max") == [0.3, 0.2, 0.1]
    assert _order(trials, "min") == [0.2, 0.3, 0.1]


def test_a_seed_stage_the_rung_rejected_is_not_reused() -> None:
    # Every trial on lr 0.1 was stopped at the seed rung; its high CAM value must not bring it back.
    trials = [_trial(0.1, 0.9, None, None), _trial(0.1, 0.9, None, None), _trial(0.2, 0.5, 0.6, 0.40)]
    assert _order(trials, "max") == [0.2]
    # Once one trial on it went further (a copy that was not judged there), it counts again.
    assert _order([*trials, _trial(0.1, 0.9, 0.7, 0.30)], "max") == [0.2, 0.1]


def test_a_warm_start_copy_is_neither_reused_nor_counted_for_the_warm_up() -> None:
    copy = _trial(0.1, 0.9, 0.8, 0.70)
    copy = create_trial(
        state=copy.state,
        value=copy.value,
        params=copy.params,
        distributions=copy.distributions,
        intermediate_values=copy.intermediate_values,
        user_attrs={WARM_START: "other", "wsss_warm_start_trial": 0},
    )
    assert _order([copy, _trial(0.2, 0.5, 0.6, 0.40)], "max") == [0.2]
    policy = ReusePolicy(fraction=1.0, warmup=2)
    assert (
        choose_upstream(policy, [copy, _trial(0.2, 0.5, 0.6, 0.4)], "max", "space", np.random.default_rng())
        is None
    )


def test_upstreams_rank_by_their_mean_final_not_the_luckiest_copy() -> None:
    steady = [_trial(0.1, 0.5, 0.6, 0.50), _trial(0.1, 0.5, 0.6, 0.50)]
    lucky = [_trial(0.2, 0.5, 0.6, v) for v in (0.30, 0.32, 0.28, 0.60)]  # max 0.60, mean 0.375
    assert _order([*lucky, *steady], "max") == [0.1, 0.2]
    assert _order([*lucky, *steady], "min") == [0.2, 0.1]


def test_refinement_knobs_are_copied_from_the_best_final_not_the_best_pseudo_masks() -> None:
    group = [_trial(0.1, 0.5, 0.9, 0.30, beta=5.0), _trial(0.1, 0.5, 0.6, 0.55, beta=11.0)]
    rng = np.random.default_rng(0)
    policy = ReusePolicy(fraction=1.0, warmup=1, top=1)
    betas = set()
    for _ in range(40):
        stage, fixed = choose_upstream(policy, group, "max", "space", rng)
        if stage == "refine":
            betas.add(fixed["refine.beta"])
    assert betas == {11.0}


def test_only_stages_upstream_of_the_final_one_are_reused() -> None:
    """A pseudo_miou search (final stage 2) that copied seed and refine knobs would rerun a finished
    trial exactly; a cam_miou search (final stage 1) would copy whole trials."""
    trials = [_trial(0.01 * (i + 1), 0.5, 0.6, 0.3 + 0.01 * i) for i in range(6)]
    rng = np.random.default_rng(0)
    policy = ReusePolicy(fraction=1.0, warmup=1)
    pseudo = {choose_upstream(policy, trials, "max", "space", rng, final_iteration=2)[0] for _ in range(50)}
    assert pseudo == {"seed"}
    assert all(
        choose_upstream(policy, trials, "max", "space", rng, final_iteration=1) is None for _ in range(20)
    )


def test_no_reuse_before_the_warmup_and_the_fraction_decides() -> None:
    trials = [_trial(0.1 * (i + 1), 0.5, 0.6, 0.4) for i in range(3)]
    rng = np.random.default_rng(0)
    assert choose_upstream(ReusePolicy(fraction=1.0, warmup=4), trials, "max", "space", rng) is None
    assert choose_upstream(ReusePolicy(fraction=0.0, warmup=1), trials, "max", "space", rng) is None
    picks = [
        choose_upstream(ReusePolicy(fraction=0.5, warmup=1), trials, "max", "space", rng) for _ in range(400)
    ]
    assert 0.4 < sum(p is not None for p in picks) / 400 < 0.6


def test_a_reused_upstream_fixes_the_seed_or_the_seed_and_refine_knobs_of_a_top_trial() -> None:
    trials = [_trial(0.01 * (i + 1), 0.5 + 0.01 * i, 0.6, 0.3 + 0.01 * i) for i in range(8)]
    top = {t.params["cam|seed.train.lr"] for t in sorted(trials, key=lambda t: -t.value)[:3]}
    rng = np.random.default_rng(1)
    stages = set()
    for _ in range(50):
        stage, fixed = choose_upstream(
            ReusePolicy(fraction=1.0, warmup=1, top=3), trials, "max", "space", rng
        )
        stages.add(stage)
        assert fixed["space"] == "cam" and fixed["cam|seed.train.lr"] in top
        assert "segment.train.lr" not in fixed
        assert ("refine.beta" in fixed) == (stage == "refine")
    assert stages == {"seed", "refine"}


def test_the_searcher_enqueues_the_upstream_and_tpe_samples_the_rest() -> None:
    def space(trial: optuna.Trial) -> dict[str, str]:
        trial.suggest_float("cam|seed.train.lr", 0.01, 0.2)
        trial.suggest_float("refine.beta", 4.0, 16.0)
        trial.suggest_float("segment.train.lr", 1e-4, 1e-2)
        return {"space": "cam"}

    searcher = StageAwareOptunaSearch(
        space=space, metric="objective", mode="max", final_iteration=3, seed=0,
        reuse=ReusePolicy(fraction=1.0, warmup=2, seed=0),
    )  # fmt: skip
    configs = {}
    for n in range(6):
        trial_id = f"t{n}"
        configs[trial_id] = searcher.suggest(trial_id)
        for step in (1, 2, 3):
            searcher.on_trial_result(
                trial_id, {"objective": 0.1 * step + 0.01 * n, "training_iteration": step}
            )
        searcher.on_trial_complete(trial_id, {"objective": 0.3 + 0.01 * n, "training_iteration": 3})
    assert [configs[f"t{n}"][REUSE_KEY] for n in range(2)] == ["-", "-"]
    reused = [c for c in configs.values() if c[REUSE_KEY] != "-"]
    assert len(reused) == 4
    earlier = [configs[f"t{n}"]["cam|seed.train.lr"] for n in range(6)]
    for config in reused:  # the seed knob is an earlier trial's, the downstream knob a fresh sample
        assert earlier.count(config["cam|seed.train.lr"]) >= 2
    assert len({c["segment.train.lr"] for c in configs.values()}) == 6
