"""The factorial design: stratified seed configs with each method's defaults first, every
combination, repeats spread over the methods, and configs a real pipeline accepts."""

from __future__ import annotations

import json
from pathlib import Path

import wsss
from tests.tuner.replay.conftest import BASE, FILES, SPACES
from tuner.replay.design import Design, make_design, stage_of, val_halves
from tuner.spaces.ranges import Base
from tuner.spaces.space import CHOICE, load_search


def _design() -> Design:
    search = load_search([SPACES / f for f in FILES], Base(BASE))
    return make_design(
        search, Base(BASE), per_method=3, refines=2, segments=3, repeats=4, short_epochs=[1, 3], seed=5
    )


def test_every_combination_of_stratified_configs() -> None:
    design = _design()
    assert [s for s in design.seeds if s.startswith("cam-")] == ["cam-0", "cam-1", "cam-2"]
    assert {c[CHOICE] for c in design.seeds.values()} == {"cam", "mixup"}
    assert len(design.pipelines) == 6 * 2 * 3 == len(set(design.pipelines))
    # the method's defaults first: the base config's lr (0.05) and weight decay
    assert design.seeds["cam-0"]["cam|seed.train.lr"] == 0.05
    assert design.seeds["cam-0"]["cam|seed.train.weight_decay"] == 5e-4
    assert (
        design.refines["r0"]["refine.beta"] == 16.0 and design.segments["g0"]["segment.balanced_ce"] is False
    )
    assert design.seeds["cam-1"] != design.seeds["cam-2"]


def test_repeats_cover_every_method_at_two_more_rng_seeds() -> None:
    repeats = _design().repeats
    assert len(repeats) == 8 and {r[3] for r in repeats} == {1, 2}
    assert {r[0].split("-")[0] for r in repeats} == {"cam", "mixup"}


def test_each_knob_belongs_to_its_stage() -> None:
    assert stage_of(CHOICE) == stage_of("cam|seed.train.lr") == "seed"
    assert stage_of("refine.beta") == "refine" and stage_of("segment.train.lr") == "segment"


def test_round_trip_and_every_pipeline_is_a_valid_config(tmp_path: Path) -> None:
    design = _design()
    design.save(tmp_path / "design.json")
    loaded = Design.load(tmp_path / "design.json")
    assert loaded.pipelines == design.pipelines and loaded.seeds == design.seeds
    search = load_search([SPACES / f for f in FILES], Base(BASE))
    for pipeline in design.pipelines:
        overrides = search.overrides(design.params(*pipeline))
        wsss.load_config(BASE, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def test_val_halves_are_fixed_disjoint_and_cover_val() -> None:
    ids = [f"val_{i:05d}" for i in range(61)]
    halves = val_halves(ids)
    assert halves == val_halves(list(ids))  # fixed: the same ids split the same way every time
    assert len(halves["search"]) == 30 and len(halves["report"]) == 31
    assert sorted(halves["search"] + halves["report"]) == ids
    assert halves["search"] != ids[:30]  # shuffled, not the first half
