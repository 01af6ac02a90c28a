"""A PASCAL VOC 2012 layout on disk: split lists, images, masks and image-level labels.

Layout (the synthetic benchmark writes exactly this):
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png  or  SegmentationClassAug/<id>.png   (palette PNG, 255 = ignore)
    ImageSets/Segmentation/<split>.txt                                (one id per line)
    cls_labels.npy   (optional) pickled {id: float32[K]} with '2007_000032' or 2007000032 keys
    class_names.txt  (optional) object class names, one per line; VOC's 20 when absent

Every problem is reported as a DataError naming the file. Image-level labels are cached as Parquet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from wsss.config import DataConfig
from wsss.data.classes import IGNORE_INDEX, read_class_names, read_mask
from wsss.errors import DataError

log = logging.getLogger(__name__)

IMAGE_DIR = "JPEGImages"
SPLIT_DIR = Path("ImageSets") / "Segmentation"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class _Entry:
    image: Path
    mask: Path
    image_bytes: int
    mask_bytes: int


class VocDataset:
    """A validated dataset: every listed id has an image and a mask; training ids have labels."""

    def __init__(
        self,
        root: Path,
        class_names: tuple[str, ...],
        cfg: DataConfig,
        splits: dict[str, tuple[str, ...]],
        entries: dict[str, _Entry],
        labels: dict[str, np.ndarray],
    ) -> None:
        self.root = root
        self.class_names = class_names
        self.cfg = cfg
        self._splits = splits
        self._entries = entries
        self._labels = labels
        self.fingerprint = self._fingerprint()

    @property
    def num_classes(self) -> int:
        """Classes including background (id 0)."""
        return len(self.class_names) + 1

    @property
    def train_ids(self) -> tuple[str, ...]:
        return self._splits[self.cfg.train_split]

    @property
    def val_ids(self) -> tuple[str, ...]:
        return self._splits[self.cfg.val_split]

    def ids(self, split: str) -> tuple[str, ...]:
        if split not in self._splits:
            raise DataError(f"{self.root / SPLIT_DIR / (split + '.txt')}: split {split!r} was not loaded")
        return self._splits[split]

    def image_path(self, image_id: str) -> Path:
        return self._entries[image_id].image

    def mask_path(self, image_id: str) -> Path:
        return self._entries[image_id].mask

    def labels(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 vector over the object classes (no background entry)."""
        return self._labels[image_id]

    def read_image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id))

    def read_mask(self, image_id: str, expect_shape: tuple[int, int] | None = None) -> np.ndarray:
        path = self.mask_path(image_id)
        mask = read_mask(path, self.num_classes)
        if expect_shape is not None and mask.shape != tuple(expect_shape):
            mask_size, image_size = f"{mask.shape[1]}x{mask.shape[0]}", f"{expect_shape[1]}x{expect_shape[0]}"
            raise DataError(f"{path}: mask is {mask_size} but its image is {image_size}")
        return mask

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) from the image header, without decoding."""
        path = self.image_path(image_id)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path}: unreadable image ({exc})") from None
        return height, width

    def _fingerprint(self) -> str:
        """Content identity used in stage keys: ids, file sizes, labels, class names.

        File sizes rather than modification times, so identical copies on different cluster nodes share
        artifacts; sizes rather than full content hashes, so opening VOC stays instant.
        """
        h = hashlib.sha256()
        h.update(json.dumps([self.class_names, self.cfg.mask_dir, sorted(self._splits.items())]).encode())
        for image_id in sorted(self._entries):
            e = self._entries[image_id]
            h.update(f"{image_id}:{e.image_bytes}:{e.mask_bytes};".encode())
        for image_id in sorted(self._labels):
            h.update(image_id.encode() + self._labels[image_id].astype(np.uint8).tobytes())
        return h.hexdigest()[:16]


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a DataError naming the file if it is unreadable or corrupt."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy, as torch.from_numpy expects
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc})") from None


def _read_split(root: Path, split: str, key: str) -> tuple[str, ...]:
    path = root / SPLIT_DIR / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"{path}: split file not found ({key} = {split!r})")
    ids = []
    for line in path.read_text().splitlines():
        token = line.strip().split()
        if token:  # also accept psa-style lines "/JPEGImages/ID.jpg /SegmentationClassAug/ID.png"
            ids.append(Path(token[0]).stem if "/" in token[0] else token[0])
    if not ids:
        raise DataError(f"{path}: empty split, no image ids listed")
    duplicates = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
    if duplicates:
        raise DataError(f"{path}: ids listed more than once: {duplicates[:5]}")
    return tuple(ids)


def _scan(folder: Path, suffixes: tuple[str, ...]) -> dict[str, tuple[Path, int]]:
    found: dict[str, tuple[Path, int]] = {}
    with os.scandir(folder) as it:
        for entry in it:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() in suffixes and stem not in found:
                found[stem] = (Path(entry.path), entry.stat().st_size)
    return found


def _entries(root: Path, mask_dir: str, splits: dict[str, tuple[str, ...]]) -> dict[str, _Entry]:
    for folder in (root / IMAGE_DIR, root / mask_dir):
        if not folder.is_dir():
            raise DataError(
                f"{folder}: missing folder (expected the VOC layout: {IMAGE_DIR}/, {mask_dir}/, {SPLIT_DIR}/)"
            )
    images = _scan(root / IMAGE_DIR, _IMAGE_SUFFIXES)
    masks = _scan(root / mask_dir, (".png",))
    entries = {}
    for split, ids in splits.items():
        split_file = root / SPLIT_DIR / f"{split}.txt"
        for image_id in ids:
            if image_id not in images:
                raise DataError(
                    f"{root / IMAGE_DIR / (image_id + '.jpg')}: missing image for id listed in {split_file}"
                )
            if image_id not in masks:
                raise DataError(
                    f"{root / mask_dir / (image_id + '.png')}: missing mask for id listed in {split_file}"
                )
            (image, image_bytes), (mask, mask_bytes) = images[image_id], masks[image_id]
            entries[image_id] = _Entry(image, mask, image_bytes, mask_bytes)
    return entries


def _labels_from_file(path: Path, ids: tuple[str, ...], num_objects: int) -> dict[str, np.ndarray]:
    try:
        table = np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise DataError(f"{path}: unreadable label file ({exc})") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a pickled dict {{image id: multi-hot vector}}")
    int_keys = bool(table) and isinstance(next(iter(table)), int | np.integer)
    out = {}
    for image_id in ids:
        # irn stores 2007_000032 as the integer 2007000032; psa, SEAM, CPN use the string.
        key: object = (
            int(image_id.replace("_", "")) if int_keys and image_id.replace("_", "").isdigit() else image_id
        )
        if key not in table:
            raise DataError(f"{path}: no labels for image id {image_id!r}")
        vec = np.asarray(table[key], dtype=np.float32).reshape(-1)
        if vec.shape[0] != num_objects:
            raise DataError(
                f"{path}: labels of {image_id!r} have {vec.shape[0]} entries, expected {num_objects} classes"
            )
        out[image_id] = (vec > 0.5).astype(np.float32)
    return out


def _labels_from_masks(
    dataset_entries: dict[str, _Entry], ids: tuple[str, ...], num_classes: int
) -> dict[str, np.ndarray]:
    out = {}
    for image_id in ids:
        present = np.unique(read_mask(dataset_entries[image_id].mask, num_classes))
        vec = np.zeros(num_classes - 1, dtype=np.float32)
        vec[present[(present > 0) & (present != IGNORE_INDEX)] - 1] = 1.0
        out[image_id] = vec
    return out


def _cached_labels(
    cache_file: Path | None, compute: Callable[[], dict[str, np.ndarray]], num_objects: int
) -> dict[str, np.ndarray]:
    if cache_file is not None and cache_file.exists():
        table = pq.read_table(cache_file).to_pydict()
        out = {}
        for image_id, present in zip(table["id"], table["classes"], strict=True):
            vec = np.zeros(num_objects, dtype=np.float32)
            vec[present] = 1.0
            out[image_id] = vec
        return out
    labels = compute()
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "id": list(labels),
                "classes": [np.flatnonzero(v).astype(np.int16).tolist() for v in labels.values()],
            }
        )
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, cache_file)
    return labels


def _load_labels(
    root: Path,
    cfg: DataConfig,
    entries: dict[str, _Entry],
    ids: tuple[str, ...],
    num_classes: int,
    cache_dir: Path | None,
) -> dict[str, np.ndarray]:
    label_file = root / cfg.cls_labels
    use_file = cfg.labels == "file" or (cfg.labels == "auto" and label_file.is_file())
    if cfg.labels == "file" and not label_file.is_file():
        raise DataError(f"{label_file}: label file not found (data.labels = 'file')")
    source = label_file if use_file else root / cfg.mask_dir
    stamp = [str(root.absolute()), str(source), list(ids)]
    stamp += (
        [label_file.stat().st_size, label_file.stat().st_mtime_ns]
        if use_file
        else [(entries[i].mask_bytes, entries[i].mask.stat().st_mtime_ns) for i in ids]
    )
    digest = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    cache_file = cache_dir / "labels" / f"{digest}.parquet" if cache_dir is not None else None

    def compute() -> dict[str, np.ndarray]:
        log.info("reading image-level labels for %d images from %s", len(ids), source)
        if use_file:
            return _labels_from_file(label_file, ids, num_classes - 1)
        return _labels_from_masks(entries, ids, num_classes)

    labels = _cached_labels(cache_file, compute, num_classes - 1)
    for image_id in ids:
        if not labels[image_id].any():
            raise DataError(
                f"{source}: training image {image_id!r} has no class labels; every training image needs one"
            )
    return labels


def open_dataset(
    root: str | os.PathLike[str],
    cfg: DataConfig,
    cache_dir: Path | None = None,
    extra_splits: tuple[str, ...] = (),
) -> VocDataset:
    """Check the layout and load splits and labels; raise DataError naming the first problem found.

    The train and val splits of `cfg` are always loaded; `extra_splits` adds others (for evaluation).
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    class_names = read_class_names(root)
    splits = {
        cfg.train_split: _read_split(root, cfg.train_split, "data.train_split"),
        cfg.val_split: _read_split(root, cfg.val_split, "data.val_split"),
    }
    for split in extra_splits:
        splits.setdefault(split, _read_split(root, split, "--split"))
    entries = _entries(root, cfg.mask_dir, splits)
    labels = _load_labels(root, cfg, entries, splits[cfg.train_split], len(class_names) + 1, cache_dir)
    return VocDataset(root, class_names, cfg, splits, entries, labels)
