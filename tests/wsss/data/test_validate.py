"""The up-front dataset check: bad images and masks of any split are found when the dataset is opened,
before a stage trains, and a passed check is not repeated."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import tiny_config
from wsss.config import DataConfig
from wsss.data.classes import write_mask
from wsss.data.voc import open_dataset
from wsss.errors import DataError
from wsss.pipeline import prepare_dataset


@pytest.fixture
def data_copy(tiny_data_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))


def _ids(root: Path, split: str) -> list[str]:
    return (root / f"ImageSets/Segmentation/{split}.txt").read_text().split()


def _open_error(root: Path, cache: Path) -> str:
    with pytest.raises(DataError) as info:
        open_dataset(root, DataConfig(), cache)
    assert "\n" not in str(info.value)
    return str(info.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("split", ["train", "val"])
def test_each_kind_of_bad_file_is_found_at_open(data_copy: Path, tmp_path: Path, split: str) -> None:
    image_id = _ids(data_copy, split)[0]
    mask = data_copy / "SegmentationClass" / f"{image_id}.png"
    image = data_copy / "JPEGImages" / f"{image_id}.jpg"
    original_mask, original_image = mask.read_bytes(), image.read_bytes()

    bad = np.zeros((64, 64), np.uint8)
    bad[:2, :2] = 7  # classes are 0..3 and 255
    write_mask(mask, bad)
    assert f"{image_id}.png: mask values [7] outside the classes 0..3 and 255" in _open_error(
        data_copy, tmp_path / "c1"
    )

    write_mask(mask, np.zeros((60, 64), np.uint8))
    assert f"{image_id}.png: mask is 64x60 but its image is 64x64" in _open_error(data_copy, tmp_path / "c2")

    mask.write_bytes(original_mask)
    _truncate(mask)
    assert f"{image_id}.png: unreadable mask" in _open_error(data_copy, tmp_path / "c3")

    mask.write_bytes(original_mask)
    _truncate(image)  # the header still reads; the pixels do not
    assert f"{image_id}.jpg: unreadable or corrupt image" in _open_error(data_copy, tmp_path / "c4")

    image.write_bytes(original_image)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(mask)  # an RGB mask
    assert f"{image_id}.png: mask must be a palette or greyscale PNG" in _open_error(
        data_copy, tmp_path / "c5"
    )


def test_every_bad_file_is_counted_and_the_first_named(data_copy: Path, tmp_path: Path) -> None:
    ids = _ids(data_copy, "val")
    for image_id in ids[:3]:
        write_mask(data_copy / "SegmentationClass" / f"{image_id}.png", np.zeros((8, 8), np.uint8))
    message = _open_error(data_copy, tmp_path / "cache")
    assert message.startswith(str(data_copy / "SegmentationClass" / f"{ids[0]}.png"))
    assert message.endswith("(and 2 more bad file(s))")


def test_a_passed_check_is_cached_on_sizes_and_times(data_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    open_dataset(data_copy, DataConfig(), cache)
    assert len(list((cache / "validated").glob("*.json"))) == 1
    # Same size and modification time: taken as the checked file (the cache's contract), not re-read.
    image_id = _ids(data_copy, "val")[0]
    mask = data_copy / "SegmentationClass" / f"{image_id}.png"
    stat = mask.stat()
    data = bytearray(mask.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mask.write_bytes(bytes(data))
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    open_dataset(data_copy, DataConfig(), cache)
    # A new modification time: checked again, and the damage is found.
    os.utime(mask, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert f"{image_id}.png: unreadable mask" in _open_error(data_copy, cache)


def test_a_broken_val_mask_stops_the_run_before_any_stage(data_copy: Path, tmp_path: Path) -> None:
    image_id = _ids(data_copy, "val")[-1]
    write_mask(data_copy / "SegmentationClass" / f"{image_id}.png", np.full((64, 64), 9, np.uint8))
    # prepare_dataset is what `wsss run` and every trial call before the first stage.
    with pytest.raises(DataError, match=rf"{image_id}\.png: mask values \[9\]"):
        prepare_dataset(tiny_config(), data_copy, tmp_path / "cache")
