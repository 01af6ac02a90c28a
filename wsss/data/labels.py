"""Image-level labels: from a `cls_labels.npy` file (psa's string keys or irn's integer keys) or derived
from the masks (present ids minus background and 255), cached as Parquet."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wsss.config import DataConfig
from wsss.data.classes import IGNORE_INDEX, read_mask
from wsss.errors import DataError

log = logging.getLogger(__name__)


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


def _labels_from_masks(masks: dict[str, tuple[Path, int]], num_classes: int) -> dict[str, np.ndarray]:
    out = {}
    for image_id, (path, _) in masks.items():
        present = np.unique(read_mask(path, num_classes))
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


def load_labels(
    root: Path, cfg: DataConfig, masks: dict[str, tuple[Path, int]], num_classes: int, cache_dir: Path | None
) -> dict[str, np.ndarray]:
    """Multi-hot labels of the ids in `masks` ({id: (mask path, size)}), from the label file or the masks.

    Cached as Parquet under `cache_dir`, keyed on the source's sizes and modification times.
    """
    ids = tuple(masks)
    label_file = root / cfg.cls_labels
    use_file = cfg.labels == "file" or (cfg.labels == "auto" and label_file.is_file())
    if cfg.labels == "file" and not label_file.is_file():
        raise DataError(f"{label_file}: label file not found (data.labels = 'file')")
    source = label_file if use_file else root / cfg.mask_dir
    stamp: list[object] = [str(root.absolute()), str(source), list(ids)]
    if use_file:
        stamp += [label_file.stat().st_size, label_file.stat().st_mtime_ns]
    else:
        stamp += [(size, path.stat().st_mtime_ns) for path, size in masks.values()]
    digest = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:16]
    cache_file = cache_dir / "labels" / f"{digest}.parquet" if cache_dir is not None else None

    def compute() -> dict[str, np.ndarray]:
        log.info("reading image-level labels for %d images from %s", len(ids), source)
        if use_file:
            return _labels_from_file(label_file, ids, num_classes - 1)
        return _labels_from_masks(masks, num_classes)

    labels = _cached_labels(cache_file, compute, num_classes - 1)
    for image_id in ids:
        if not labels[image_id].any():
            raise DataError(
                f"{source}: training image {image_id!r} has no class labels; every training image needs one"
            )
    return labels
