from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from wsss.config import DataConfig
from wsss.data.classes import write_mask
from wsss.data.voc import open_dataset
from wsss.errors import DataError
from wsss.stages.evaluate import run


def test_ground_truth_scores_one_and_errors_name_the_file(tiny_data_dir: Path, tmp_path: Path) -> None:
    data = open_dataset(tiny_data_dir, DataConfig(), tmp_path / "cache")
    pred = tmp_path / "pred"
    shutil.copytree(tiny_data_dir / "SegmentationClass", pred)
    assert run(pred, data, "val").miou == pytest.approx(1.0)

    image_id = data.val_ids[0]
    write_mask(pred / f"{image_id}.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=rf"{image_id}\.png: prediction is 10x10, ground truth 64x64"):
        run(pred, data, "val")
    write_mask(pred / f"{image_id}.png", np.full((64, 64), 7, np.uint8))
    with pytest.raises(DataError, match=rf"{image_id}\.png: mask values \[7\] outside the classes"):
        run(pred, data, "val")
    (pred / f"{image_id}.png").unlink()
    with pytest.raises(DataError, match=rf"{image_id}\.png: no prediction for '{image_id}' of split 'val'"):
        run(pred, data, "val")
    with pytest.raises(DataError, match="nothere: prediction folder not found"):
        run(tmp_path / "nothere", data, "val")
