from __future__ import annotations

from pathlib import Path

import pytest

from tests.tuner.helpers import write_space
from tuner.spaces.space import load_search
from tuner.trial.settings import TrialSettings
from tuner.trial.trainable import final_iteration, stage_objective, trial_config, trial_note


@pytest.mark.parametrize(
    ("stage", "metric", "expected"),
    [
        ("seed", "val_miou", 0.5),  # stage proxies: best-threshold CAM mIoU...
        ("refine", "val_miou", 0.6),  # ...then pseudo-mask mIoU...
        ("segment", "val_miou", 0.45),  # ...then the search metric
        ("segment", "pseudo_miou", 0.6),  # a metric from an earlier stage
        ("segment", "cam_miou", 0.48),
        ("refine", "pseudo_miou", 0.6),  # at the metric's stage: the metric (its last stage)
        ("seed", "pseudo_miou", 0.5),  # before it: the stage proxy
        ("seed", "cam_miou", 0.48),  # a one-stage search: the metric itself, not the proxy
    ],
)
def test_stage_objective(stage: str, metric: str, expected: float) -> None:
    so_far = {"cam_miou": 0.48, "cam_miou_best": 0.5, "pseudo_miou": 0.6, "val_miou": 0.45}
    assert stage_objective(stage, so_far, metric) == expected


def test_a_search_runs_the_stages_up_to_its_metrics() -> None:
    assert [final_iteration(m) for m in ("cam_miou", "cam_miou_best", "pseudo_miou", "val_miou")] == [
        1,
        1,
        2,
        3,
    ]


def test_a_trials_description_names_what_was_sampled(tmp_path: Path) -> None:
    params = {"refine.beta": {"float": [4.0, 16.0]}, "segment.train.lr": {"float": [0.005, 0.05]}}
    search = load_search([write_space(tmp_path, params=params)])
    settings = TrialSettings(search, None, str(tmp_path / "store"), None, "0", "run", 1, None)
    config = {"space": "tiny", "tiny|refine.beta": 8.0, "tiny|segment.train.lr": 0.02}
    space, cfg = trial_config(search, settings, config)
    note = trial_note(settings, space, cfg)
    assert note.startswith("A tiny trial (cam) of a search that maximises val_miou; sampled: ")
    assert "refine.beta=8.0, segment.train.lr=0.02." in note
    # A staged upstream job samples no DeepLab knob yet: its description does not claim one.
    space, cfg = trial_config(search, settings, config, stages=("seed", "refine"))
    assert "sampled: refine.beta=8.0." in trial_note(settings, space, cfg, ("seed", "refine"))
