"""The staged promotion search's decisions: promotion only from rungs holding enough records and only
from their top 1/eta, rungs gated by their measured fidelity, per-stage models fitted only on their own
knobs, the base config and every method first, and the incumbent taken at the highest full rung."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tuner.search.ladder import Ladder, eta_for, spearman_lower
from tuner.search.reuse import param_stage
from tuner.search.staged import RUNGS, StagedPlanner
from tuner.spaces.ranges import Base
from tuner.spaces.space import CHOICE, load_search

SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


@pytest.fixture(scope="module")
def search():
    return load_search([SPACES / "cam.yaml", SPACES / "mixup.yaml", SPACES / "seam.yaml"])


def test_a_rung_promotes_nothing_before_it_holds_min_records_then_its_top_once() -> None:
    ladder = Ladder(etas=(2.0, 3.0, 3.0, 3.0), min_records=4)
    ladder.records[0] = {0: 0.5, 1: 0.9, 2: 0.1}
    assert ladder.promotable(0, 2.0) == []  # 3 records: nothing is decided on so few
    ladder.records[0][3] = 0.7
    assert ladder.promotable(0, 2.0) == [1, 3]  # the top floor(4 / 2), best first
    ladder.promoted[0].add(1)
    assert ladder.promotable(0, 2.0) == [3]
    assert ladder.promotable(0, 3.0) == []  # top floor(4 / 3) = 1, already promoted


def test_fidelity_gates_the_reduction_factor() -> None:
    assert eta_for(0.1, 3.0) == 1.0  # the rung says nothing: promote everything
    assert eta_for(0.5, 3.0) == 2.0
    assert eta_for(0.8, 3.0) == 3.0
    rng = np.random.default_rng(0)
    x = rng.random(40)
    assert spearman_lower(x, 2 * x + 1, rng) == pytest.approx(1.0)
    assert spearman_lower(x, rng.random(40), rng) < 0.3


def _drive(planner: StagedPlanner, jobs: int, value) -> list:
    """Run `jobs` rung jobs one at a time, each reporting value(job)."""
    done = []
    for _ in range(jobs):
        job = planner.next_job()
        planner.report(job, value(job))
        done.append(job)
    return done


def test_the_base_config_comes_first_then_every_method_once(search) -> None:
    planner = StagedPlanner(search, seed=0, base=Base())
    first = [planner.next_job() for _ in range(3)]
    assert all(job.rung == 0 for job in first)
    assert [job.params[CHOICE] for job in first] == ["cam", "mixup", "seam"]
    assert first[0].params["cam|seed.train.lr"] == Base().value("seed.train.lr", "cam")


def test_promotions_climb_the_ladder_and_models_see_only_their_own_knobs(search) -> None:
    planner = StagedPlanner(search, seed=1, base=Base(), audit=0.0)
    quality = {}

    def value(job):  # an upstream's quality is fixed when it is drawn; higher rungs read it more closely
        parent = planner.configs[job.config].parent
        root = job.config if parent is None else parent
        q = quality.setdefault(root, float(np.random.default_rng(root).random()))
        return q * (0.8 + 0.05 * job.rung)

    jobs = _drive(planner, 120, value)
    rungs = [job.rung for job in jobs]
    assert max(rungs) == len(RUNGS) - 1  # some finalist was repeated at a second rng_seed
    first_promotion = rungs.index(1)
    assert rungs[:first_promotion] == [0] * first_promotion and first_promotion >= 4
    for rung in range(1, len(RUNGS)):
        climbed = [j for j in jobs if j.rung == rung]
        assert len(climbed) <= len([j for j in jobs if j.rung == rung - 1])
    # the upstream model never holds a DeepLab knob, the segment model nothing else
    upstream_keys = {k for t in planner.upstream.trials for k in t.params}
    segment_keys = {k for t in planner.segment.trials for k in t.params}
    assert upstream_keys and not any(k.startswith("segment.") for k in upstream_keys)
    assert segment_keys and all(k.startswith("segment.") for k in segment_keys)
    # a child carries its upstream's knobs and DeepLab knobs of its own
    child = next(j for j in jobs if j.rung == 2)
    parent = planner.configs[child.config].parent
    assert parent is not None
    upstream = next(j for j in jobs if j.config == parent).params
    assert {k: v for k, v in child.params.items() if not k.startswith("segment.")} == upstream
    # the incumbent is the best config of the repeat rung, valued at the mean of its two draws
    config, best = planner.incumbent() or (None, None)
    repeated = planner.ladder.records[4]
    assert config in repeated and best == max(repeated.values())
    assert best == pytest.approx(np.mean(planner.configs[config].draws))


def test_without_repeats_the_ladder_ends_at_the_full_schedule(search) -> None:
    planner = StagedPlanner(search, seed=2, base=Base(), repeat=False)
    jobs = _drive(planner, 60, lambda job: float(np.random.default_rng(job.config).random()))
    assert max(job.rung for job in jobs) == 3
    assert planner.incumbent() is not None


def test_a_rung_whose_values_say_nothing_about_the_next_promotes_everything(search) -> None:
    rng = np.random.default_rng(0)
    for gate in ("final", "next"):
        planner = StagedPlanner(search, seed=3, base=Base(), gate_pairs=6, audit=0.0, gate=gate)
        _drive(planner, 200, lambda job: float(rng.random()))  # every rung an independent draw
        assert len(planner.pairs(0)) >= 6
        assert planner.eta(0) == 1.0
        assert planner.eta(3) == 3.0  # full -> repeat is never gated: the repeat is no proxy


def test_mode_min_promotes_the_lowest_values(tmp_path: Path) -> None:
    space = tmp_path / "cam_min.yaml"
    include = [str(SPACES / "refine.yaml"), str(SPACES / "segment.yaml")]
    space.write_text(yaml.safe_dump({"method": "cam", "mode": "min", "include": include, "params": {}}))
    planner = StagedPlanner(load_search([space]), seed=0, base=Base(), audit=0.0, min_records=4)
    jobs = [planner.next_job() for _ in range(4)]
    for job, value in zip(jobs, (0.9, 0.1, 0.5, 0.7), strict=True):
        planner.report(job, value)
    promoted = planner.next_job()
    assert promoted.rung == 1 and promoted.config == jobs[1].config


def test_without_the_short_rung_children_start_on_the_full_schedule(search) -> None:
    planner = StagedPlanner(search, seed=4, base=Base(), short=False, audit=0.0)
    jobs = _drive(planner, 60, lambda job: float(np.random.default_rng(job.config).random()))
    assert 2 not in {job.rung for job in jobs} and 3 in {job.rung for job in jobs}
    told = [t for t in planner.segment.trials if t.value is not None]
    assert told  # the DeepLab model learns from the full schedule then
    with pytest.raises(ValueError, match="gate: 'best' is not one of"):
        StagedPlanner(search, seed=0, gate="best")


def _seed_knobs(params: dict) -> dict:
    return {k: v for k, v in params.items() if param_stage(k, CHOICE) == "seed"}


def test_a_promoted_seed_gets_siblings_sharing_its_seed_stage_that_start_on_the_pseudo_rung(search) -> None:
    planner = StagedPlanner(search, seed=5, base=Base(), audit=0.0, refine_branch=3)
    jobs = _drive(planner, 60, lambda job: float(np.random.default_rng(job.config).random()))
    first_rung = {}
    for job in jobs:
        first_rung.setdefault(job.config, job.rung)
    siblings = [c for c, rung in first_rung.items() if rung == 1]
    promoted = planner.ladder.promoted[0]
    assert siblings and len(siblings) <= 2 * len(promoted)  # refine_branch - 1 per promoted seed
    # none before the start-up configurations (the base config, then each method) were all asked
    start_up = [job.config for job in jobs if job.rung == 0][: len(search.spaces)]
    assert min(siblings) > max(start_up)
    for sibling in siblings:
        params = planner.configs[sibling].params
        seeds = [c for c in promoted if _seed_knobs(planner.configs[c].params) == _seed_knobs(params)]
        assert seeds, "a sibling shares the seed knobs of a configuration promoted out of the CAM rung"
        refine = {k: v for k, v in params.items() if k.startswith("refine.")}
        assert refine and all(
            refine != {k: v for k, v in planner.configs[c].params.items() if k.startswith("refine.")}
            for c in seeds
        )
        assert planner.configs[sibling].parent is None  # an upstream: it ranks on the pseudo rung
        trial = planner.upstream.trials[planner.configs[sibling].upstream_trial]
        assert trial.params == {k: v for k, v in params.items() if k in trial.params}


def test_auto_siblings_only_while_the_seed_stage_costs_at_least_the_refine_stage(search) -> None:
    def siblings(seed_seconds: float, refine_seconds: float) -> int:
        planner = StagedPlanner(search, seed=6, base=Base(), audit=0.0)  # refine_branch="auto"
        for _ in range(80):
            job = planner.next_job()
            planner.observe({"seed": seed_seconds, "refine": refine_seconds, "segment": 99.0})
            planner.report(job, float(np.random.default_rng(job.config).random()))
        starts = {}
        for config, state in enumerate(planner.configs):
            if state.parent is None:
                starts[config] = config in planner.ladder.records[0]
        return sum(not on_cam for on_cam in starts.values())

    assert siblings(10.0, 5.0) > 0  # a sibling costs a third of a new upstream
    assert siblings(4.0, 6.0) == 0  # VOC's proportions: it costs 60% of one
    with pytest.raises(ValueError, match="refine_branch: 'auto' or an integer >= 1, got 0"):
        StagedPlanner(search, seed=0, refine_branch=0)
