"""A PASCAL VOC 2012 layout on disk: split lists, images, masks and image-level labels.

Layout (the synthetic benchmark writes exactly this):
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png  or  SegmentationClassAug/<id>.png   (palette PNG, 255 = ignore)
    ImageSets/Segmentation/<split>.txt                                (one id per line)
    cls_labels.npy   (optional) pickled {id: float32[K]} with '2007_000032' or 2007000032 keys
    class_names.txt  (optional) object class names, one per line; VOC's 20 when absent

Every problem is reported as a DataError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.config import DataConfig
from wsss.data.classes import read_class_names
from wsss.data.image_files import image_size, read_image, read_mask
from wsss.data.labels import load_labels
from wsss.data.validate import validate_dataset
from wsss.errors import DataError, read_text

IMAGE_DIR = "JPEGImages"
SPLIT_DIR = Path("ImageSets") / "Segmentation"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Entry:
    image: Path
    mask: Path
    image_bytes: int
    mask_bytes: int
    image_mtime_ns: int
    mask_mtime_ns: int


class VocDataset:
    """A validated dataset: every listed id has an image and a mask; training ids have labels."""

    def __init__(
        self,
        root: Path,
        class_names: tuple[str, ...],
        cfg: DataConfig,
        splits: dict[str, tuple[str, ...]],
        entries: dict[str, Entry],
        labels: dict[str, np.ndarray],
        cache_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.cache_dir = cache_dir  # where this dataset's derived files are cached (labels, image maps)
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

    @property
    def holdout_ids(self) -> tuple[str, ...]:
        """Held-out val ids (data.holdout_split): predicted and scored apart from val; () when none."""
        return self._splits[self.cfg.holdout_split] if self.cfg.holdout_split else ()

    @property
    def eval_ids(self) -> frozenset[str]:
        """The train ids that CAM and pseudo-mask mIoU are measured on (data.eval_split)."""
        return frozenset(self._splits[self.cfg.score_split])

    def ids(self, split: str) -> tuple[str, ...]:
        if split not in self._splits:
            raise DataError(f"{self.root / SPLIT_DIR / (split + '.txt')}: split {split!r} was not loaded")
        return self._splits[split]

    def entry(self, image_id: str) -> Entry:
        return self._entries[image_id]

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
        return image_size(self.image_path(image_id))

    def _fingerprint(self) -> str:
        """Content identity used in stage keys: ids, file sizes, labels, class names.

        File sizes rather than modification times, so identical copies on different cluster nodes share
        artifacts; sizes rather than full content hashes, so opening VOC stays instant.
        """
        h = hashlib.sha256()
        scoring = [self.cfg.eval_mask_dir] if self.cfg.eval_mask_dir else []  # old keys stay valid
        h.update(
            json.dumps([self.class_names, self.cfg.mask_dir, sorted(self._splits.items()), *scoring]).encode()
        )
        for image_id in sorted(self._entries):
            e = self._entries[image_id]
            h.update(f"{image_id}:{e.image_bytes}:{e.mask_bytes};".encode())
        for image_id in sorted(self._labels):
            h.update(image_id.encode() + self._labels[image_id].astype(np.uint8).tobytes())
        return h.hexdigest()[:16]


def _read_split(root: Path, split: str, key: str) -> tuple[str, ...]:
    if not split or "/" in split or "\\" in split or split.startswith("."):
        raise DataError(f"{key} = {split!r}: a split is a file name in {root / SPLIT_DIR}, not a path")
    path = root / SPLIT_DIR / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"{path}: split file not found ({key} = {split!r})")
    ids = []
    for line in read_text(path, DataError).splitlines():
        token = line.strip().split()
        if token:  # also accept psa-style lines "/JPEGImages/ID.jpg /SegmentationClassAug/ID.png"
            ids.append(Path(token[0]).stem if "/" in token[0] else token[0])
    if not ids:
        raise DataError(f"{path}: empty split, no image ids listed")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise DataError(f"{path}: ids listed more than once: {duplicates[:5]}")
    return tuple(ids)


@dataclass
class _Scan:
    """The regular files of one folder with the wanted suffixes, by stem, and what stands in the way
    of using some of them: entries that cannot be looked at (a symlink loop), stems with two files."""

    found: dict[str, tuple[Path, int, int]]  # stem -> (path, size, mtime_ns)
    unreadable: dict[str, str]  # stem -> the problem, naming the file
    ambiguous: dict[str, list[Path]]  # stem -> its files (x.jpg and x.png)

    def get(self, image_id: str, expected: Path, what: str, split_file: Path) -> tuple[Path, int, int]:
        """The file of an id listed in `split_file`, or a DataError naming the `expected` file."""
        if image_id in self.ambiguous:
            names = ", ".join(p.name for p in self.ambiguous[image_id])
            raise DataError(f"{expected}: several files for one id ({names}); keep one")
        if image_id in self.found:
            return self.found[image_id]
        if image_id in self.unreadable:
            raise DataError(self.unreadable[image_id])
        raise DataError(f"{expected}: missing {what} for id listed in {split_file}")


def _scan(folder: Path, suffixes: tuple[str, ...]) -> _Scan:
    """The folder's files with these suffixes; a file that cannot even be looked at matters only if a
    split lists its id (an unlisted broken link must not stop every run)."""
    scan = _Scan({}, {}, {})
    with os.scandir(folder) as it:
        for entry in it:
            stem, suffix = os.path.splitext(entry.name)
            if suffix.lower() not in suffixes:
                continue
            try:
                if not entry.is_file():
                    continue
                stat = entry.stat()
            except OSError as exc:
                scan.unreadable.setdefault(stem, f"{entry.path}: cannot read it ({exc.strerror or exc})")
                continue
            if stem in scan.found:
                scan.ambiguous.setdefault(stem, [scan.found[stem][0]]).append(Path(entry.path))
                continue
            scan.found[stem] = (Path(entry.path), stat.st_size, stat.st_mtime_ns)
    for paths in scan.ambiguous.values():
        paths.sort()
    return scan


def _entries(root: Path, mask_dir: str, splits: dict[str, tuple[str, ...]]) -> dict[str, Entry]:
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
            expected_image = root / IMAGE_DIR / f"{image_id}.jpg"
            image, image_bytes, image_mtime = images.get(image_id, expected_image, "image", split_file)
            expected_mask = root / mask_dir / f"{image_id}.png"
            mask, mask_bytes, mask_mtime = masks.get(image_id, expected_mask, "mask", split_file)
            entries[image_id] = Entry(image, mask, image_bytes, mask_bytes, image_mtime, mask_mtime)
    return entries


def _check_disjoint(root: Path, cfg: DataConfig, splits: dict[str, tuple[str, ...]]) -> None:
    """val mIoU is the held-out score: images the models trained on must not be among val's."""
    shared = sorted(set(splits[cfg.val_split]) & set(splits[cfg.train_split]))
    if shared:
        val_file, train_file = (root / SPLIT_DIR / f"{s}.txt" for s in (cfg.val_split, cfg.train_split))
        raise DataError(
            f"{val_file}: {len(shared)} val id(s) are also in {train_file} (e.g. {shared[:3]}); val must be "
            "held out (score train images with data.eval_split)"
        )


def _check_holdout(root: Path, cfg: DataConfig, splits: dict[str, tuple[str, ...]]) -> None:
    """The held-out images are scored as unseen: no model trains on them, and no search selects on them."""
    for other in (cfg.train_split, cfg.val_split):
        shared = sorted(set(splits[cfg.holdout_split]) & set(splits[other]))
        if shared:
            holdout_file, other_file = (root / SPLIT_DIR / f"{s}.txt" for s in (cfg.holdout_split, other))
            raise DataError(
                f"{holdout_file}: {len(shared)} data.holdout_split id(s) are also in {other_file} "
                f"(e.g. {shared[:3]}); held-out images must be in neither train nor val"
            )


def _check_subset(root: Path, cfg: DataConfig, splits: dict[str, tuple[str, ...]]) -> None:
    """CAMs and pseudo masks exist for train ids only, so the eval split must lie inside the train split."""
    outside = sorted(set(splits[cfg.eval_split]) - set(splits[cfg.train_split]))
    if outside:
        eval_file, train_file = (root / SPLIT_DIR / f"{s}.txt" for s in (cfg.eval_split, cfg.train_split))
        raise DataError(
            f"{eval_file}: data.eval_split must be a subset of data.train_split, but {len(outside)} id(s) "
            f"are not in {train_file}: {outside[:5]}"
        )


def open_dataset(
    root: str | os.PathLike[str],
    cfg: DataConfig,
    cache_dir: Path | None = None,
    extra_splits: tuple[str, ...] = (),
    workers: int = 1,
) -> VocDataset:
    """Check the layout, load splits and labels, and check every listed image and mask (on `workers`
    threads, cached under `cache_dir`); raise DataError naming the first problem found.

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
    if cfg.val_split != cfg.train_split:  # the same split for both is DataConfig's to refuse
        _check_disjoint(root, cfg, splits)
    if cfg.holdout_split:
        splits[cfg.holdout_split] = _read_split(root, cfg.holdout_split, "data.holdout_split")
        _check_holdout(root, cfg, splits)
    if cfg.eval_split:
        splits.setdefault(cfg.eval_split, _read_split(root, cfg.eval_split, "data.eval_split"))
        _check_subset(root, cfg, splits)
    for split in extra_splits:
        splits.setdefault(split, _read_split(root, split, "--split"))
    entries = _entries(root, cfg.mask_dir, splits)
    masks = {i: (entries[i].mask, entries[i].mask_bytes) for i in splits[cfg.train_split]}
    labels = load_labels(root, cfg, masks, class_names, cache_dir)
    if cfg.score_mask_dir != cfg.mask_dir:
        # Image labels come from mask_dir (or the label file); scoring reads the other ground truth.
        scored = {s: ids for s, ids in splits.items() if s != cfg.train_split or s == cfg.score_split}
        entries |= _entries(root, cfg.score_mask_dir, scored)
    dataset = VocDataset(root, class_names, cfg, splits, entries, labels, cache_dir)
    validate_dataset(dataset, splits, cache_dir, workers)
    return dataset
