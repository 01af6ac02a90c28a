"""Dataset-level confusion-matrix mIoU (the VOC protocol) and the CAM background-threshold sweep."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsss.data.classes import IGNORE_INDEX


@dataclass(frozen=True)
class Scores:
    miou: float
    iou: tuple[
        float | None, ...
    ]  # per class, background first; None where a class is in neither GT nor prediction
    pixel_accuracy: float
    fg_precision: float  # correctly classified foreground pixels / pixels predicted as foreground
    fg_recall: float  # correctly classified foreground pixels / foreground pixels in the ground truth


def scores_from_confusion(conf: np.ndarray) -> Scores:
    """C[g, p] counts pixels of ground truth g predicted p. IoU_c = TP / (TP + FP + FN).

    mIoU is the mean over classes that occur in the ground truth or the prediction (chainercv's nanmean);
    a class absent from both has no IoU rather than a free 0 or 1.
    """
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = conf.sum()
    fg_tp = tp[1:].sum()
    predicted_fg = conf[:, 1:].sum()
    true_fg = conf[1:, :].sum()
    return Scores(
        miou=float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        iou=tuple(None if np.isnan(v) else float(v) for v in iou),
        pixel_accuracy=float(tp.sum() / total) if total else 0.0,
        fg_precision=float(fg_tp / predicted_fg) if predicted_fg else 0.0,
        fg_recall=float(fg_tp / true_fg) if true_fg else 0.0,
    )


class ConfusionMatrix:
    """Accumulates one num_classes x num_classes matrix over all pixels of all images (bincount)."""

    def __init__(self, num_classes: int) -> None:
        self.n = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Pixels whose ground truth is 255 are skipped. Predictions outside 0..n-1 count as background
        (irn's eval maps a predicted 255 to 0) so that every valid pixel is scored."""
        valid = gt != IGNORE_INDEX
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        p[(p < 0) | (p >= self.n)] = 0
        self.matrix += np.bincount(self.n * g + p, minlength=self.n * self.n).reshape(self.n, self.n)

    def scores(self) -> Scores:
        return scores_from_confusion(self.matrix)


class ThresholdSweep:
    """Confusion matrices of CAM segmentation for many background thresholds in one pass per image.

    With a constant background plane t, a pixel is labelled with its top class c* iff max CAM m > t,
    else background. Binning pixels by how many thresholds lie below m gives a (T+1, n, n) histogram;
    suffix sums over the bins then give every threshold's confusion matrix (SEAM/CPN sweep t, psa uses
    t = 0.2, irn 0.15).
    """

    def __init__(self, num_classes: int, thresholds: np.ndarray) -> None:
        self.n = num_classes
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.hist = np.zeros((len(self.thresholds) + 1, num_classes, num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, cams: np.ndarray, keys: np.ndarray) -> None:
        valid = gt != IGNORE_INDEX
        g = gt[valid].astype(np.int64)
        if len(keys):
            peak = cams.max(axis=0)[valid]
            top = (np.asarray(keys, dtype=np.int64) + 1)[cams.argmax(axis=0)[valid]]
        else:
            peak = np.zeros(g.shape, np.float32)
            top = np.zeros(g.shape, np.int64)
        # Compare in float32, as the CAMs and cams_to_mask's background plane are float32.
        below = np.searchsorted(self.thresholds.astype(np.float32), peak.astype(np.float32), side="left")
        flat = (below * self.n + g) * self.n + top
        self.hist += np.bincount(flat, minlength=self.hist.size).reshape(self.hist.shape)

    def confusions(self) -> np.ndarray:
        """(T, n, n): matrix i for threshold i."""
        at_least = np.cumsum(self.hist[::-1], axis=0)[::-1]  # [b] = pixels with >= b thresholds below m
        at_most = np.cumsum(self.hist, axis=0)  # [b] = pixels with <= b thresholds below m
        out = at_least[1:].copy()  # threshold i labels a pixel foreground iff > i thresholds lie below m
        out[:, :, 0] += at_most[:-1].sum(axis=2)  # the others are background, whatever their top class
        return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def strict_json(value: Any, indent: int | None = None) -> str:
    """JSON that every parser reads: a metric that is not a number (nan, inf) is null, never `NaN`."""
    return json.dumps(_finite(value), indent=indent, allow_nan=False)
