"""Ranges relative to the base config: one space that fits the CPU defaults and the voc12 preset."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import wsss
from tuner.spaces.check import check
from tuner.spaces.ranges import Base, contains
from tuner.spaces.space import check_files, load_search

REPO_SPACES = Path(__file__).resolve().parents[3] / "search_spaces"
VOC12 = Base(wsss.config_source("voc12"))
MSRC = Base(wsss.config_source("msrc"))


def _space(tmp_path: Path, params: dict, method: str = "cam") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"method": method, "params": params}))
    return path


def test_relative_ranges_scale_with_the_base_config(tmp_path: Path) -> None:
    path = _space(
        tmp_path,
        {
            "seed.train.lr": {"float": [0.2, 4.0], "log": True, "relative": True},
            "seed.train.epochs": {"float": [0.5, 1.5], "step": 0.25, "relative": True},
            "segment.train.lr": {"categorical": [0.5, 1.0, 2.0], "relative": True},
            "refine.beta": {"float": [0.5, 1.0], "step": 0.25, "relative": True},
        },
    )
    default = {p.key: p.distribution for p in load_search([path]).spaces[0].params}
    assert default["seed.train.lr"] == FloatDistribution(0.01, 0.2, log=True)  # 0.05 x [0.2, 4]
    assert default["seed.train.epochs"] == IntDistribution(8, 24, step=4)  # 16 x [0.5, 1.5] by 0.25
    assert default["segment.train.lr"] == CategoricalDistribution([0.01, 0.02, 0.04])
    assert default["refine.beta"] == FloatDistribution(8.0, 16.0, step=4.0)
    voc = {p.key: p.distribution for p in load_search([path], VOC12).spaces[0].params}
    assert voc["seed.train.lr"] == FloatDistribution(0.02, 0.4, log=True)  # voc12's lr is 0.1
    assert voc["seed.train.epochs"] == IntDistribution(3, 8)  # 5 x [0.5, 1.5]: 2.5 -> 3, step 1.25 -> 1
    assert voc["segment.train.lr"] == CategoricalDistribution([0.000125, 0.00025, 0.0005])


def test_relative_int_ranges_keep_optunas_step_grid(tmp_path: Path) -> None:
    """Rounded bounds are fitted to the rounded step, so Optuna never has to adjust (and warn)."""
    path = _space(tmp_path, {"segment.train.epochs": {"float": [0.5, 1.5], "step": 0.25, "relative": True}})
    (param,) = load_search([path], VOC12).spaces[0].params
    dist = param.distribution
    assert isinstance(dist, IntDistribution)
    assert (dist.low, dist.step) == (10, 5) and (dist.high - dist.low) % dist.step == 0  # 19 x [0.5, 1.5]


def test_relative_range_needs_a_non_zero_base(tmp_path: Path) -> None:
    path = _space(tmp_path, {"seed.params.max_soft": {"float": [0.5, 2.0], "relative": True}}, "fmix")
    assert any(
        "seed.params.max_soft: a relative range needs a non-zero base value" in p for p in check_files([path])
    )


def test_samples_of_the_readme_voc_search_sit_around_the_presets_values() -> None:
    """`wsss-tune search search_spaces/cam.yaml --config voc12` (docs/search.md): each learning rate is drawn
    within 0.2x-4x (seed), 0.25x-1.5x (refine) and 0.25x-2.5x (segment) of the preset's."""
    search = load_search([REPO_SPACES / "cam.yaml"], VOC12)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base = wsss.load_config("voc12")
    for _ in range(50):
        trial = study.ask()
        choice = search.define(trial)  # samples the parameters into trial.params
        overrides = search.overrides({**trial.params, **choice})
        ratios = {
            "seed": overrides["seed.train.lr"] / base.seed.train.lr,
            "refine": overrides["refine.train.lr"] / base.refine.train.lr,
            "segment": overrides["segment.train.lr"] / base.segment.train.lr,
        }
        assert (
            0.2 <= ratios["seed"] <= 4
            and 0.25 <= ratios["refine"] <= 1.5
            and 0.25 <= ratios["segment"] <= 2.5
        )
        assert 3 <= overrides["seed.train.epochs"] <= 8


@pytest.mark.parametrize("base", [Base(), VOC12, MSRC], ids=["defaults", "voc12", "msrc"])
def test_every_shipped_range_can_give_the_base_value(base: Base) -> None:
    report = check(sorted(REPO_SPACES.glob("*.yaml")), base)
    assert report.problems == [] and report.warnings == []
    assert {f.path.name for f in report.files} == {p.name for p in REPO_SPACES.glob("*.yaml")}


@pytest.mark.parametrize("base", [Base(), VOC12, MSRC], ids=["defaults", "voc12", "msrc"])
def test_refine_powers_follow_the_base_and_never_cross(base: Base) -> None:
    """msrc's powers are 1 / 8: the old absolute alpha_low range [2, 8] could not load on it (SpaceError)
    and reached its alpha_high. Relative ranges keep alpha_low below alpha_high on every preset."""
    search = load_search([REPO_SPACES / "cam.yaml"], base)
    shared = {p.key: p.distribution for p in search.spaces[0].shared}
    low, high = shared["refine.alpha_low"], shared["refine.alpha_high"]
    assert isinstance(low, FloatDistribution) and isinstance(high, FloatDistribution)
    assert low.high <= high.low
    assert (low.low, low.high) == (
        0.5 * base.value("refine.alpha_low", "cam"),
        2 * base.value("refine.alpha_low", "cam"),
    )
    if base == Base():  # the defaults sample what the absolute ranges did (the replay table's design)
        assert (low.low, low.high, high.low, high.high) == (2.0, 8.0, 32.0, 256.0)


def test_absolute_ranges_written_for_the_defaults_are_reported_on_voc12(tmp_path: Path) -> None:
    """The old segment.yaml: 0.005-0.05 is 20-200x voc12's DeepLab lr of 2.5e-4."""
    shared = tmp_path / "segment.yaml"
    shared.write_text(yaml.safe_dump({"params": {"segment.train.lr": {"float": [0.005, 0.05], "log": True}}}))
    assert check([shared], Base()).warnings == []
    (warning,) = check([shared], VOC12).warnings
    assert warning.startswith(f"{shared}: segment.train.lr: float log-uniform [0.005, 0.05] cannot give")
    assert "0.00025" in warning


def test_contains_compares_lists_and_bounds() -> None:
    space = load_search([REPO_SPACES / "cam.yaml"]).spaces[0]
    scales = next(p for p in space.params if p.key == "seed.scales")
    assert contains(scales, (1.0, 0.5, 1.5, 2.0)) and not contains(scales, (2.0,))
    lr = next(p for p in space.params if p.key == "seed.train.lr")
    assert contains(lr, 0.01) and contains(lr, 0.2) and not contains(lr, 0.25)
