"""The VOC-layout reader: label sources, the Parquet cache, and one clear error per kind of bad input."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.config import DataConfig
from wsss.data.classes import VOC_CLASSES, read_class_names, voc_palette, write_mask
from wsss.data.voc import open_dataset
from wsss.errors import DataError


@pytest.fixture
def data_copy(tiny_data_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))


def _first_train_id(root: Path) -> str:
    return (root / "ImageSets/Segmentation/train.txt").read_text().split()[0]


def test_opens_and_fingerprints(tiny_data_dir: Path, tmp_path: Path) -> None:
    data = open_dataset(tiny_data_dir, DataConfig(), tmp_path)
    assert data.num_classes == 4 and data.class_names == ("ant", "bee", "cat")
    assert len(data.train_ids) == 12 and len(data.val_ids) == 6
    image_id = data.train_ids[0]
    assert data.read_image(image_id).shape == (64, 64, 3)
    assert data.labels(image_id).shape == (3,)
    assert data.fingerprint == open_dataset(tiny_data_dir, DataConfig(), tmp_path).fingerprint


def test_labels_from_masks_match_the_label_file(tiny_data_dir: Path, tmp_path: Path) -> None:
    from_file = open_dataset(tiny_data_dir, DataConfig(labels="file"), tmp_path)
    from_masks = open_dataset(tiny_data_dir, DataConfig(labels="masks"), tmp_path)
    for image_id in from_file.train_ids:
        assert np.array_equal(from_file.labels(image_id), from_masks.labels(image_id))


def test_labels_are_cached_as_parquet(data_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = open_dataset(data_copy, DataConfig(labels="masks"), cache)
    files = list((cache / "labels").glob("*.parquet"))
    assert len(files) == 1
    again = open_dataset(data_copy, DataConfig(labels="masks"), cache)
    assert all(np.array_equal(first.labels(i), again.labels(i)) for i in first.train_ids)


def test_integer_label_keys_as_in_irn(data_copy: Path, tmp_path: Path) -> None:
    """irn stores 2007_000032 as 2007000032; psa and SEAM use the string."""
    ids = ["2007_000032", "2007_000039"]
    for image_id in ids:
        shutil.copy(
            data_copy / "JPEGImages" / f"{_first_train_id(data_copy)}.jpg",
            data_copy / "JPEGImages" / f"{image_id}.jpg",
        )
        shutil.copy(
            data_copy / "SegmentationClass" / f"{_first_train_id(data_copy)}.png",
            data_copy / "SegmentationClass" / f"{image_id}.png",
        )
    (data_copy / "ImageSets/Segmentation/mini.txt").write_text("\n".join(ids) + "\n")
    table = {2007000032: np.array([1, 0, 0], np.float32), 2007000039: np.array([0, 1, 1], np.float32)}
    np.save(data_copy / "int_labels.npy", table, allow_pickle=True)
    data = open_dataset(data_copy, DataConfig(train_split="mini", cls_labels="int_labels.npy"), tmp_path)
    assert data.labels("2007_000039").tolist() == [0, 1, 1]


def test_psa_style_list_lines(data_copy: Path, tmp_path: Path) -> None:
    image_id = _first_train_id(data_copy)
    (data_copy / "ImageSets/Segmentation/psa.txt").write_text(
        f"/JPEGImages/{image_id}.jpg /SegmentationClassAug/{image_id}.png\n"
    )
    assert open_dataset(data_copy, DataConfig(train_split="psa"), tmp_path).train_ids == (image_id,)


def test_class_names_default_to_voc(tmp_path: Path) -> None:
    assert read_class_names(tmp_path) == VOC_CLASSES
    assert voc_palette()[3:6] == [128, 0, 0]  # VOC's aeroplane red


# --- one test per kind of bad input; each error names the offending file -------------------------------


def _error(root: Path, tmp_path: Path, cfg: DataConfig | None = None) -> str:
    with pytest.raises(DataError) as info:
        open_dataset(root, cfg or DataConfig(), tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_data_folder(tmp_path: Path) -> None:
    assert "nowhere: data folder not found" in _error(tmp_path / "nowhere", tmp_path)


@pytest.mark.parametrize("folder", ["JPEGImages", "SegmentationClass"])
def test_missing_layout_folder(data_copy: Path, tmp_path: Path, folder: str) -> None:
    shutil.rmtree(data_copy / folder)
    assert f"{data_copy / folder}: missing folder" in _error(data_copy, tmp_path)


def test_missing_split_file(data_copy: Path, tmp_path: Path) -> None:
    message = _error(data_copy, tmp_path, DataConfig(val_split="test"))
    assert (
        f"{data_copy / 'ImageSets/Segmentation/test.txt'}: split file not found (data.val_split = 'test')"
        in message
    )


def test_empty_split(data_copy: Path, tmp_path: Path) -> None:
    (data_copy / "ImageSets/Segmentation/val.txt").write_text("\n\n")
    assert "val.txt: empty split" in _error(data_copy, tmp_path)


@pytest.mark.parametrize(
    ("folder", "suffix", "what"), [("JPEGImages", ".jpg", "image"), ("SegmentationClass", ".png", "mask")]
)
def test_listed_id_without_file(data_copy: Path, tmp_path: Path, folder: str, suffix: str, what: str) -> None:
    image_id = _first_train_id(data_copy)
    (data_copy / folder / f"{image_id}{suffix}").unlink()
    message = _error(data_copy, tmp_path)
    assert f"{image_id}{suffix}: missing {what} for id listed in" in message and "train.txt" in message


def test_corrupt_image(data_copy: Path, tmp_path: Path) -> None:
    data = open_dataset(data_copy, DataConfig(), tmp_path)
    image_id = data.train_ids[0]
    path = data_copy / "JPEGImages" / f"{image_id}.jpg"
    path.write_bytes(path.read_bytes()[:200])  # truncated
    with pytest.raises(DataError, match=rf"{image_id}\.jpg: unreadable or corrupt image"):
        data.read_image(image_id)
    path.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=rf"{image_id}\.jpg: unreadable or corrupt image"):
        data.read_image(image_id)


def test_mask_values_outside_the_classes(data_copy: Path, tmp_path: Path) -> None:
    image_id = _first_train_id(data_copy)
    mask = np.zeros((64, 64), np.uint8)
    mask[:4, :4] = 9  # only classes 0..3 and 255 exist
    write_mask(data_copy / "SegmentationClass" / f"{image_id}.png", mask)
    message = _error(data_copy, tmp_path, DataConfig(labels="masks"))
    assert f"{image_id}.png: mask values [9] outside the classes 0..3 and 255" in message


def test_image_and_mask_sizes_differ(data_copy: Path, tmp_path: Path) -> None:
    data = open_dataset(data_copy, DataConfig(), tmp_path)
    image_id = data.train_ids[0]
    write_mask(data_copy / "SegmentationClass" / f"{image_id}.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(DataError, match=rf"{image_id}\.png: mask is 40x30 but its image is 64x64"):
        data.read_mask(image_id, expect_shape=data.read_image(image_id).shape[:2])


def test_training_image_without_labels(data_copy: Path, tmp_path: Path) -> None:
    image_id = _first_train_id(data_copy)
    labels = np.load(data_copy / "cls_labels.npy", allow_pickle=True).item()
    labels[image_id] = np.zeros(3, np.float32)
    np.save(data_copy / "cls_labels.npy", labels, allow_pickle=True)
    message = _error(data_copy, tmp_path)
    assert f"cls_labels.npy: training image {image_id!r} has no class labels" in message
    # from masks: an all-background mask has no labels either
    write_mask(data_copy / "SegmentationClass" / f"{image_id}.png", np.zeros((64, 64), np.uint8))
    assert f"training image {image_id!r} has no class labels" in _error(
        data_copy, tmp_path, DataConfig(labels="masks")
    )


def test_label_file_problems(data_copy: Path, tmp_path: Path) -> None:
    (data_copy / "cls_labels.npy").write_bytes(b"garbage")
    assert "cls_labels.npy: unreadable label file" in _error(data_copy, tmp_path)
    np.save(data_copy / "cls_labels.npy", {"other": np.ones(3)}, allow_pickle=True)
    assert "cls_labels.npy: no labels for image id" in _error(data_copy, tmp_path)
    image_id = _first_train_id(data_copy)
    np.save(data_copy / "cls_labels.npy", {image_id: np.ones(20)}, allow_pickle=True)
    assert "have 20 entries, expected 3 classes" in _error(data_copy, tmp_path)
    (data_copy / "cls_labels.npy").unlink()
    assert "label file not found (data.labels = 'file')" in _error(
        data_copy, tmp_path, DataConfig(labels="file")
    )


def test_palette_png_mask_round_trip(tmp_path: Path) -> None:
    mask = np.array([[0, 1], [255, 3]], np.uint8)
    write_mask(tmp_path / "m.png", mask)
    image = Image.open(tmp_path / "m.png")
    assert image.mode == "P" and np.array_equal(np.asarray(image), mask)


def test_label_cache_follows_the_class_names(data_copy: Path, tmp_path: Path) -> None:
    """A changed class_names.txt is another label space: the cached labels are not reused."""
    cache = tmp_path / "cache"
    for labels in ("file", "masks"):
        assert open_dataset(data_copy, DataConfig(labels=labels), cache).num_classes == 4
    names = data_copy / "class_names.txt"
    names.write_text("ant\nbee\ncat\ndog\n")  # extended: a class with no images yet
    extended = open_dataset(data_copy, DataConfig(labels="masks"), cache)
    assert extended.labels(extended.train_ids[0]).shape == (4,)
    assert "have 3 entries, expected 4 classes" in _error(data_copy, tmp_path, DataConfig(labels="file"))
    names.write_text("ant\nbee\n")  # shrunk: masks now hold ids that are no class
    message = _error(data_copy, tmp_path, DataConfig(labels="masks"))
    assert "outside the classes 0..2 and 255" in message


def _voc_with_aug(root: Path) -> tuple[list[str], list[str]]:
    """The VOC setup: train_aug = train + SBD ids, SegmentationClassAug (here: every mask shifted to
    class 1, standing in for SBD's coarser masks) beside SegmentationClass; train 1,464 lies inside."""
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    aug = root / "SegmentationClassAug"
    aug.mkdir()
    for png in (root / "SegmentationClass").glob("*.png"):
        mask = np.array(Image.open(png))
        write_mask(aug / png.name, np.where((mask > 0) & (mask != 255), 1, mask).astype(np.uint8))
    (root / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(train) + "\n")
    (root / "ImageSets/Segmentation/train_small.txt").write_text("\n".join(train[:4]) + "\n")
    return train, train[:4]


def test_eval_split_and_eval_masks_score_the_voc_way(data_copy: Path, tmp_path: Path) -> None:
    """Train on train_aug with labels from its masks; score CAMs and pseudo masks on the train subset
    and val against SegmentationClass (the papers' protocol)."""
    train, small = _voc_with_aug(data_copy)
    cfg = DataConfig(
        mask_dir="SegmentationClassAug",
        train_split="train_aug",
        eval_split="train_small",
        eval_mask_dir="SegmentationClass",
        labels="masks",
    )
    data = open_dataset(data_copy, cfg, tmp_path)
    assert data.train_ids == tuple(train) and data.eval_ids == frozenset(small)
    for image_id in (small[0], data.val_ids[0]):  # scored: the original VOC masks
        assert data.mask_path(image_id).parent.name == "SegmentationClass"
    assert data.mask_path(train[-1]).parent.name == "SegmentationClassAug"  # train only: label source
    original = np.array(Image.open(data_copy / "SegmentationClass" / f"{small[0]}.png"))
    assert np.array_equal(data.read_mask(small[0]), original)
    # Labels still come from mask_dir: the stand-in SBD masks only ever hold class 1.
    assert all(data.labels(i)[1:].sum() == 0 for i in train)
    # The default scores the whole train split against mask_dir, with an unchanged fingerprint.
    plain = open_dataset(data_copy, DataConfig(), tmp_path)
    assert plain.eval_ids == frozenset(plain.train_ids)
    assert data.fingerprint != plain.fingerprint


def test_eval_split_outside_the_train_split_is_named(data_copy: Path, tmp_path: Path) -> None:
    val = (data_copy / "ImageSets/Segmentation/val.txt").read_text().split()
    (data_copy / "ImageSets/Segmentation/mixed.txt").write_text(f"{_first_train_id(data_copy)}\n{val[0]}\n")
    with pytest.raises(
        DataError, match=r"mixed\.txt: data\.eval_split must be a subset of data\.train_split"
    ):
        open_dataset(data_copy, DataConfig(eval_split="mixed"), tmp_path)
    with pytest.raises(DataError, match=r"nosuch\.txt: split file not found \(data\.eval_split"):
        open_dataset(data_copy, DataConfig(eval_split="nosuch"), tmp_path)


def test_eval_split_cannot_be_the_val_split() -> None:
    from wsss.config_load import load_config
    from wsss.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.eval_split: must be a subset of the train split"):
        load_config(None, ["data.eval_split=val"])


def _split_val(root: Path) -> tuple[list[str], list[str]]:
    """val_a and val_b: the two halves of val, written as split files."""
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    half = len(val) // 2
    for name, ids in (("val_a", val[:half]), ("val_b", val[half:])):
        (root / f"ImageSets/Segmentation/{name}.txt").write_text("\n".join(ids) + "\n")
    return val[:half], val[half:]


def test_holdout_split_is_loaded_apart_from_val(data_copy: Path, tmp_path: Path) -> None:
    search, held = _split_val(data_copy)
    data = open_dataset(data_copy, DataConfig(val_split="val_a", holdout_split="val_b"), tmp_path)
    assert (data.val_ids, data.holdout_ids) == (tuple(search), tuple(held))
    assert data.mask_path(held[0]).is_file()
    plain = open_dataset(data_copy, DataConfig(val_split="val_a"), tmp_path)
    assert plain.holdout_ids == () and plain.fingerprint != data.fingerprint
    # The default data config keeps its fingerprint: no stored stage changes key.
    assert (
        open_dataset(data_copy, DataConfig(), tmp_path).fingerprint
        == open_dataset(data_copy, DataConfig(holdout_split=""), tmp_path).fingerprint
    )


def test_holdout_images_in_val_or_train_are_named(data_copy: Path, tmp_path: Path) -> None:
    _split_val(data_copy)
    with pytest.raises(DataError, match=r"val\.txt: 3 data\.holdout_split id\(s\) are also in .*val_b\.txt"):
        open_dataset(data_copy, DataConfig(val_split="val_b", holdout_split="val"), tmp_path)
    (data_copy / "ImageSets/Segmentation/mixed.txt").write_text(f"{_first_train_id(data_copy)}\n")
    with pytest.raises(
        DataError, match=r"mixed\.txt: 1 data\.holdout_split id\(s\) are also in .*/train\.txt"
    ):
        open_dataset(data_copy, DataConfig(holdout_split="mixed"), tmp_path)
    with pytest.raises(DataError, match=r"nosuch\.txt: split file not found \(data\.holdout_split"):
        open_dataset(data_copy, DataConfig(holdout_split="nosuch"), tmp_path)


@pytest.mark.parametrize("split", ["val", "train"])
def test_holdout_split_cannot_be_val_or_train(split: str) -> None:
    from wsss.config_load import load_config
    from wsss.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"data\.holdout_split: '{split}' must be a split of its own"):
        load_config(None, [f"data.holdout_split={split}"])


def test_an_unlisted_broken_link_does_not_stop_a_run(data_copy: Path, tmp_path: Path) -> None:
    loop = data_copy / "JPEGImages" / "stray.jpg"
    os.symlink(loop.name, loop)  # a link to itself: looking at it fails with ELOOP
    data = open_dataset(data_copy, DataConfig(), tmp_path)
    assert "stray" not in data.train_ids and len(data.train_ids) == 12


def test_a_split_file_saved_with_a_byte_order_mark(
    tiny_data_dir: Path, data_copy: Path, tmp_path: Path
) -> None:
    split = data_copy / "ImageSets/Segmentation/val.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())  # as Windows editors save UTF-8
    data = open_dataset(data_copy, DataConfig(), tmp_path)
    assert data.val_ids == open_dataset(tiny_data_dir, DataConfig(), tmp_path).val_ids
