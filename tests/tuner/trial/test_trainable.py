from __future__ import annotations

import pytest

from tuner.trial.trainable import final_iteration, stage_objective


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
