from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import optuna
import pytest
import ray
import yaml

import wsss
from tests.tuner.helpers import write_space
from tuner.spaces.ranges import MAX_CHOICES
from tuner.spaces.space import CHOICE, SpaceError, check_files, load_search, load_space

REPO_SPACES = Path(__file__).resolve().parents[3] / "search_spaces"


@pytest.mark.parametrize("path", sorted(REPO_SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_space_is_valid(path: Path) -> None:
    assert check_files([path]) == []


def test_every_method_has_a_space() -> None:
    """A new method is a file in wsss/methods plus one in search_spaces (the contract of DESIGN.md)."""
    methods_with_spaces = {yaml.safe_load(p.read_text()).get("method") for p in REPO_SPACES.glob("*.yaml")}
    assert set(wsss.list_methods()) <= methods_with_spaces


def test_every_searched_key_builds_a_config() -> None:
    space = load_search([REPO_SPACES / "cam.yaml"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        config = {**trial.params, **space.define(trial)}
        overrides = space.overrides({**trial.params, **config})
        cfg = wsss.load_config(
            None, [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in overrides.items()]
        )
        assert cfg.seed.method == "cam"
        assert (
            isinstance(cfg.seed.scales, tuple) and cfg.seed.scales[0] == 1.0
        )  # list choices come back as lists


def _problems(tmp_path: Path, body: dict, include: dict | None = None) -> list[str]:
    for name, content in (include or {}).items():
        (tmp_path / name).write_text(yaml.safe_dump(content))
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"method": "cam", **body}))
    return check_files([path])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"params": {"seed.train.lrr": {"float": [0.1, 0.2]}}},
            "space.yaml: seed.train.lrr: not a config field",
        ),
        (
            {"params": {"runtime.threads": {"int": [1, 4]}}},
            "runtime.threads: not searchable: runtime settings",
        ),
        (
            {"params": {"data.mask_dir": {"categorical": ["SegmentationClass"]}}},
            "data.mask_dir: not searchable",
        ),
        ({"params": {"seed.method": {"categorical": ["cam"]}}}, "seed.method: set by the space's `method:`"),
        ({"params": {"refine.beta": {"float": [4, 2]}}}, "refine.beta: low 4 must be below high 2"),
        (
            {"params": {"refine.beta": {"float": [0, 2], "log": True}}},
            "refine.beta: a log range needs low > 0",
        ),
        (
            {"params": {"refine.beta": {"float": [1, 2], "lgo": True}}},
            "refine.beta: unknown option(s) ['lgo']",
        ),
        ({"params": {"refine.beta": {"uniform": [1, 2]}}}, "refine.beta: expected one of"),
        ({"params": {"seed.train.epochs": {"float": [1, 4]}}}, "a float range does not fit this int field"),
        ({"params": {"seed.train.epochs": {"int": [1.5, 4]}}}, "int bounds must be integers"),
        (
            {"params": {"seed.train.lr": {"float": [-0.1, 0.2]}}},
            "seed.train.lr: range [-0.1, 0.2] leaves the valid values",
        ),
        ({"params": {"segment.balanced_ce": {"categorical": [True, 3]}}}, "choice 3 is invalid"),
        ({"params": {"seed.scales": {"categorical": []}}}, "categorical needs a non-empty list"),
        ({"params": {"refine.logt": {"int": [2, 6], "step": 0}}}, "refine.logt: step must be > 0, got 0"),
        ({"params": {"refine.beta": {"float": [2, 6], "step": 0}}}, "refine.beta: step must be > 0, got 0"),
        ({"params": {"refine.beta": {"float": [2, 6], "step": -0.5}}}, "step must be > 0, got -0.5"),
        ({"params": {"refine.logt": {"int": [2, 6], "step": 1.5}}}, "step must be a positive integer"),
        ({"params": {"refine.beta": {"float": [2, 6], "step": "1"}}}, "step must be a positive number"),
        ({"params": {"refine.beta": {"float": [2, 6], "step": 5}}}, "step 5 is larger than the range"),
        ({"fixed": {"seed.train.lr": 0}}, "space.yaml: seed.train.lr: must be > 0"),
        (
            {"params": {"segment.balanced_ce": {"categorical": [1, 2], "relative": True}}},
            "segment.balanced_ce: relative ranges need a numeric field, but the base value is False",
        ),
        (
            {"params": {"seed.train.epochs": {"int": [1, 2], "relative": True}}},
            "seed.train.epochs: a relative range gives multipliers: use float",
        ),
        (
            {"params": {"seed.train.lr": {"float": [-1, 2], "relative": True}}},
            "seed.train.lr: multipliers must be > 0, got [-1, 2]",
        ),
        (
            {"params": {"seed.train.lr": {"float": [0.5, 2], "relative": "yes"}}},
            "seed.train.lr: relative must be true or false",
        ),
        (
            {"params": {"refine.logt": {"float": [0.5, 3.0], "relative": True}}},
            "refine.logt (float [0.5, 3.0] x base 5): range [3, 15] leaves the valid values",
        ),
        (
            {"fixed": {"refine.beta": 2}, "params": {"refine.beta": {"float": [1, 3]}}},
            "refine.beta: both fixed and searched",
        ),
        ({"metric": "miou"}, "metric: 'miou' is not one of"),
        ({"mode": "maximise"}, "mode: 'maximise' is not max or min"),
        ({"method": "nope"}, "method: unknown method 'nope'"),
        ({"paramz": {}}, "paramz: unknown key"),
        ({"include": ["missing.yaml"]}, "missing.yaml: no such search-space file"),
    ],
)
def test_problems_name_the_file_and_key(tmp_path: Path, body: dict, expected: str) -> None:
    problems = _problems(tmp_path, body)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(str(tmp_path)) for p in problems)


def test_included_file_problems_name_that_file(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        {"include": ["shared.yaml"], "params": {"refine.beta": {"float": [2, 3]}}},
        include={
            "shared.yaml": {"params": {"refine.logtt": {"int": [1, 2]}, "refine.beta": {"float": [4, 8]}}}
        },
    )
    assert any(
        p.startswith(str(tmp_path / "shared.yaml")) and "refine.logtt: not a config field" in p
        for p in problems
    )
    assert any("space.yaml: refine.beta: also set by an included file" in p for p in problems)


def test_broken_yaml_and_shared_files_checked_alone(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("params: [unclosed\n")
    (tmp_path / "shared.yaml").write_text(
        yaml.safe_dump({"params": {"refine.nope": {"int": [1, 2]}}, "metric": "x"})
    )
    problems = check_files([tmp_path / "broken.yaml", tmp_path / "shared.yaml"])
    assert any("broken.yaml: invalid YAML" in p for p in problems)
    assert any("shared.yaml: metric: unknown key; a shared file holds only" in p for p in problems)
    assert any("shared.yaml: refine.nope: not a config field" in p for p in problems)
    with pytest.raises(SpaceError, match="not a method space"):
        load_space(tmp_path / "shared.yaml")


def test_conditional_multi_space_search(tmp_path: Path) -> None:
    """Two method spaces: the space is a categorical choice and each brings only its own knobs."""
    shutil.copy(REPO_SPACES / "refine.yaml", tmp_path / "refine.yaml")
    fast = write_space(
        tmp_path, "fast", params={"seed.train.lr": {"float": [0.1, 0.2]}}, include=["refine.yaml"]
    )
    slow = write_space(
        tmp_path,
        "slow",
        params={
            "seed.train.lr": {"float": [0.001, 0.01], "log": True},
            "seed.train.weight_decay": {"categorical": [1.0e-4, 5.0e-4]},
        },
        include=["refine.yaml"],
    )
    search = load_search([fast, slow])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        constants = search.define(trial)
        overrides = search.overrides({**trial.params, **constants})
        seen.add(constants[CHOICE])
        assert trial.params[CHOICE] == constants[CHOICE]
        assert "refine.beta" in trial.params  # shared knobs in every branch
        if constants[CHOICE] == "fast":
            assert set(trial.params) - {CHOICE} == {
                "fast|seed.train.lr",
                *(k for k in trial.params if k.startswith("refine.")),
            }
            assert 0.1 <= overrides["seed.train.lr"] <= 0.2 and "seed.train.weight_decay" not in overrides
        else:
            assert (
                "slow|seed.train.weight_decay" in trial.params and 0.001 <= overrides["seed.train.lr"] <= 0.01
            )
        study.tell(trial, 0.5)
    assert seen == {"fast", "slow"}


def test_search_level_consistency(tmp_path: Path) -> None:
    a = write_space(tmp_path, "a")
    b = write_space(tmp_path, "b", metric="pseudo_miou")
    with pytest.raises(SpaceError, match="metric/mode pseudo_miou/max differ"):
        load_search([a, b])
    with pytest.raises(SpaceError, match="several spaces share this name"):
        load_search([a, a])


def test_data_settings_may_be_fixed_but_not_searched(tmp_path: Path) -> None:
    """A VOC search fixes data.mask_dir / train_split for all its trials; searching them is refused."""
    assert (
        _problems(
            tmp_path, {"fixed": {"data.mask_dir": "SegmentationClassAug", "data.train_split": "train_aug"}}
        )
        == []
    )
    assert any(
        "set data.* under `fixed`" in p
        for p in _problems(tmp_path, {"params": {"data.train_split": {"categorical": ["a"]}}})
    )
    assert any(
        "runtime.workers: not searchable" in p for p in _problems(tmp_path, {"fixed": {"runtime.workers": 2}})
    )


def test_all_method_spaces_search_together() -> None:
    """Every method in one search: the method is a choice with its own knobs."""
    names = wsss.list_methods()
    assert {"cam", "mixup", "fmix", "manifold_mixup", "seam", "cpn"} <= set(names)
    files = [REPO_SPACES / f"{m}.yaml" for m in names]
    search = load_search(files)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    methods = set()
    for _ in range(60):
        trial = study.ask()
        constants = search.define(trial)
        overrides = search.overrides({**trial.params, **constants})
        dotted = [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in overrides.items()]
        cfg = wsss.load_config(None, dotted)
        methods.add(cfg.seed.method)
        if cfg.seed.method == "manifold_mixup":
            assert isinstance(cfg.seed.params.layers, tuple)
        if cfg.seed.method == "cpn":  # patch sets are choices of sets
            assert isinstance(cfg.seed.params.grid_cells, tuple) and cfg.seed.params.grid_cells
        study.tell(trial, 0.5)
    assert methods == set(names)


def test_valid_steps_reach_optuna(tmp_path: Path) -> None:
    path = write_space(
        tmp_path,
        params={"refine.logt": {"int": [2, 6], "step": 2}, "refine.beta": {"float": [2, 6], "step": 1}},
    )
    (space,) = load_search([path]).spaces
    steps = {p.key: p.distribution.step for p in space.params}
    assert steps == {"refine.logt": 2, "refine.beta": 1.0}


def test_space_errors_survive_pickling_as_ray_sends_them() -> None:
    """Ray pickles a trial's exception to the driver; the problems must arrive whole, not one
    character per line."""
    error = SpaceError(["a.yaml: refine.beta: low 4 must be below high 2", "a.yaml: mode: 'x' is not max"])
    again = pickle.loads(ray.cloudpickle.dumps(error))
    assert again.problems == error.problems and str(again) == str(error)
    assert wsss.user_message(again) == "; ".join(error.problems)


@pytest.mark.timeout(60)  # a config per choice took 3 ms each: 200,000 choices ran for ten minutes
def test_every_choice_of_a_long_categorical_is_checked_quickly(tmp_path: Path) -> None:
    choices = [float(i + 1) for i in range(1000)]
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"method": "cam", "params": {"refine.beta": {"categorical": choices}}}))
    assert check_files([path]) == []
    path.write_text(
        yaml.safe_dump({"method": "cam", "params": {"refine.beta": {"categorical": [*choices[:-1], -1.0]}}})
    )
    (problem,) = check_files([path])
    assert "refine.beta: choice -1.0 is invalid (refine.beta: must be > 0, got -1.0)" in problem
    assert len(choices) == MAX_CHOICES
