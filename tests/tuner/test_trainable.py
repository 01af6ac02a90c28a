from __future__ import annotations

import pytest

from tuner.trainable import stage_objective


@pytest.mark.parametrize(
    ("stage", "metric", "expected"),
    [
        ("seed", "val_miou", 0.5),  # stage proxies: best-threshold CAM mIoU...
        ("refine", "val_miou", 0.6),  # ...then pseudo-mask mIoU...
        ("segment", "val_miou", 0.45),  # ...then the search metric
        ("segment", "pseudo_miou", 0.6),  # a metric from an earlier stage
        ("segment", "cam_miou", 0.48),
    ],
)
def test_stage_objective(stage: str, metric: str, expected: float) -> None:
    so_far = {"cam_miou": 0.48, "cam_miou_best": 0.5, "pseudo_miou": 0.6, "val_miou": 0.45}
    assert stage_objective(stage, so_far, metric) == expected
