from __future__ import annotations

import json

import numpy as np
import pytest

from wsss.metrics import ConfusionMatrix, ThresholdSweep, scores_from_confusion, strict_json
from wsss.ops.cam import cams_to_mask


def test_hand_computed_miou() -> None:
    # 3 classes. gt / pred over 8 pixels, one ignored:
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 2]], np.uint8)
    cm = ConfusionMatrix(3)
    cm.update(gt, pred)
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    s = cm.scores()
    # IoU0 = 1 / (2 + 2 - 1) = 1/3 ; IoU1 = 2 / (3 + 3 - 2) = 1/2 ; IoU2 = 1 / (2 + 2 - 1) = 1/3
    assert s.iou == pytest.approx((1 / 3, 1 / 2, 1 / 3))
    assert s.miou == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert s.pixel_accuracy == pytest.approx(4 / 7)
    # foreground: TP = 2 + 1 = 3 ; predicted fg = 5 ; true fg = 5
    assert s.fg_precision == pytest.approx(3 / 5) and s.fg_recall == pytest.approx(3 / 5)


def test_dataset_level_not_per_image_average() -> None:
    cm = ConfusionMatrix(2)
    cm.update(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))  # image IoU1 = 1
    cm.update(np.array([[1, 0, 0, 0]]), np.array([[0, 1, 0, 0]]))  # image IoU1 = 0
    # pooled: TP1 = 4, FP1 = 1, FN1 = 1 -> 4/6 ; TP0 = 2, FP0 = 1, FN0 = 1 -> 2/4
    assert cm.scores().iou == pytest.approx((0.5, 4 / 6))


def test_absent_classes_are_left_out_and_stray_predictions_count_as_background() -> None:
    cm = ConfusionMatrix(4)
    cm.update(np.array([[0, 1]]), np.array([[0, 255]]))  # a predicted 255 scores as background (irn)
    s = cm.scores()
    assert s.iou[2] is None and s.iou[3] is None
    assert s.iou[0] == pytest.approx(0.5) and s.iou[1] == 0.0
    assert s.miou == pytest.approx(0.25)


def test_empty_confusion() -> None:
    assert scores_from_confusion(np.zeros((3, 3))).miou == 0.0


def test_threshold_sweep_matches_direct_computation() -> None:
    rng = np.random.default_rng(0)
    thresholds = np.arange(0, 1.0001, 0.05)
    sweep = ThresholdSweep(4, thresholds)
    direct = [ConfusionMatrix(4) for _ in thresholds]
    for _ in range(5):
        keys = np.sort(rng.choice(3, size=rng.integers(1, 4), replace=False))
        cams = rng.random((len(keys), 12, 9)).astype(np.float32)
        cams[:, :3] = thresholds[4]  # exact ties go to the background
        gt = rng.integers(0, 4, (12, 9)).astype(np.uint8)
        gt[0, 0] = 255
        sweep.update(gt, cams, keys)
        for cm, t in zip(direct, thresholds, strict=True):
            cm.update(gt, cams_to_mask(cams, keys, t))
    for matrix, cm in zip(sweep.confusions(), direct, strict=True):
        assert np.array_equal(matrix, cm.matrix)


def test_json_for_other_programs_has_no_nan() -> None:
    text = strict_json({"cam_fg_precision": float("nan"), "iou": [0.5, float("inf"), None], "n": 1})
    assert json.loads(text) == {"cam_fg_precision": None, "iou": [0.5, None, None], "n": 1}
    assert "NaN" not in text and "Infinity" not in text
