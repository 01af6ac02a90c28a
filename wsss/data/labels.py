"""Image-level labels: from a `cls_labels.npy` file (psa's string keys or irn's integer keys) or derived
from the masks (present ids minus background and 255), cached as Parquet."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wsss.config import DataConfig
from wsss.data.classes import mask_labels
from wsss.data.image_files import read_mask
from wsss.data.safe_npy import UnsafeFileError, load_npy
from wsss.errors import DataError

log = logging.getLogger(__name__)


def _label_vector(path: Path, image_id: str, value: object, num_objects: int) -> np.ndarray:
    """One image's entry as a float32 vector; anything but a flat list or array of numbers is refused."""
    if isinstance(value, np.ndarray):
        ok = value.dtype.kind in "biuf"
    else:
        ok = isinstance(value, list | tuple) and all(isinstance(v, int | float | np.number) for v in value)
    if not ok:
        kind = type(value).__name__
        raise DataError(f"{path}: labels of {image_id!r} are not a vector of numbers ({kind})")
    entries = value.size if isinstance(value, np.ndarray) else len(value)  # type: ignore[arg-type]
    if entries != num_objects:
        raise DataError(
            f"{path}: labels of {image_id!r} have {entries} entries, expected {num_objects} classes"
        )
    vec = np.asarray(value, dtype=np.float32).reshape(-1)
    if not np.all((vec == 0) | (vec == 1)):  # psa's and irn's files hold 0/1; nan or 0.7 means no label
        odd = vec[(vec != 0) & (vec != 1)][0]
        raise DataError(f"{path}: labels of {image_id!r} must be 0 or 1 per class, found {odd}")
    return vec


def _labels_from_file(path: Path, ids: tuple[str, ...], num_objects: int) -> dict[str, np.ndarray]:
    """psa/irn `cls_labels.npy`, read without unpickling anything but NumPy arrays (see safe_npy)."""
    try:
        table = load_npy(path)
    except UnsafeFileError as exc:
        raise DataError(f"{path}: unreadable label file ({exc})") from None
    except Exception as exc:  # untrusted bytes: any failure to parse them is the file's problem
        raise DataError(f"{path}: unreadable label file ({type(exc).__name__}: {exc})") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a dict {{image id: multi-hot vector}} saved with np.save")
    bad_key = next((k for k in table if not isinstance(k, str | int | np.integer)), None)
    if bad_key is not None:
        raise DataError(f"{path}: keys must be image ids (str or int), found {type(bad_key).__name__}")
    int_keys = bool(table) and isinstance(next(iter(table)), int | np.integer)
    out = {}
    for image_id in ids:
        # irn stores 2007_000032 as the integer 2007000032; psa, SEAM, CPN use the string.
        key: object = (
            int(image_id.replace("_", "")) if int_keys and image_id.replace("_", "").isdigit() else image_id
        )
        if key not in table:
            raise DataError(f"{path}: no labels for image id {image_id!r}")
        out[image_id] = _label_vector(path, image_id, table[key], num_objects)
    return out


def _labels_from_masks(masks: dict[str, tuple[Path, int]], num_classes: int) -> dict[str, np.ndarray]:
    out = {}
    for image_id, (path, _) in masks.items():
        out[image_id] = mask_labels(read_mask(path, num_classes), num_classes - 1)
    return out


def _read_cache(cache_file: Path, num_objects: int) -> dict[str, np.ndarray] | None:
    try:
        table = pq.read_table(cache_file).to_pydict()
        out = {}
        for image_id, present in zip(table["id"], table["classes"], strict=True):
            vec = np.zeros(num_objects, dtype=np.float32)
            vec[present] = 1.0
            out[image_id] = vec
    except (OSError, KeyError, ValueError, IndexError, TypeError, pa.ArrowException) as exc:
        log.warning("ignoring unreadable label cache %s (%s); reading the labels again", cache_file, exc)
        return None
    return out


def _cached_labels(
    cache_file: Path | None, compute: Callable[[], dict[str, np.ndarray]], num_objects: int
) -> dict[str, np.ndarray]:
    if cache_file is not None and cache_file.exists():
        cached = _read_cache(cache_file, num_objects)
        if cached is not None:
            return cached
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


# Bumped whenever what a cached label table means changes.
_CACHE_VERSION = 2


def load_labels(
    root: Path,
    cfg: DataConfig,
    masks: dict[str, tuple[Path, int]],
    class_names: tuple[str, ...],
    cache_dir: Path | None,
) -> dict[str, np.ndarray]:
    """Multi-hot labels of the ids in `masks` ({id: (mask path, size)}), from the label file or the masks.

    Cached as Parquet under `cache_dir`, keyed on everything that defines them: the source's sizes and
    modification times, the ids and the class names (a changed class list is a different label space).
    """
    ids = tuple(masks)
    num_classes = len(class_names) + 1
    label_file = root / cfg.cls_labels
    use_file = cfg.labels == "file" or (cfg.labels == "auto" and label_file.is_file())
    if cfg.labels == "file" and not label_file.is_file():
        raise DataError(f"{label_file}: label file not found (data.labels = 'file')")
    source = label_file if use_file else root / cfg.mask_dir
    stamp: list[object] = [_CACHE_VERSION, str(root.absolute()), str(source), list(ids), list(class_names)]
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
