"""Evaluate stage: dataset-level confusion-matrix mIoU of any folder of `<id>.png` masks against the
ground truth of a split (the VOC protocol; ignore 255). Also `wsss eval PRED_DIR`."""

from __future__ import annotations

from pathlib import Path

from wsss.data.image_files import read_mask
from wsss.data.voc import VocDataset
from wsss.errors import DataError
from wsss.metrics import ConfusionMatrix, Scores


def run(pred_dir: Path, data: VocDataset, split: str) -> Scores:
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: prediction folder not found")
    confusion = ConfusionMatrix(data.num_classes)
    for image_id in data.ids(split):
        path = pred_dir / f"{image_id}.png"
        if not path.is_file():
            raise DataError(f"{path}: no prediction for {image_id!r} of split {split!r}")
        prediction = read_mask(path, data.num_classes)
        gt = data.read_mask(image_id)
        if prediction.shape != gt.shape:
            raise DataError(
                f"{path}: prediction is {prediction.shape[1]}x{prediction.shape[0]}, "
                f"ground truth {gt.shape[1]}x{gt.shape[0]}"
            )
        confusion.update(gt, prediction)
    return confusion.scores()
