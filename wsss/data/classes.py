"""PASCAL VOC class names, the VOC colour palette and palette-PNG mask I/O."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.image_files import IGNORE_INDEX
from wsss.errors import DataError, read_text

__all__ = ["IGNORE_INDEX", "VOC_CLASSES", "mask_labels", "read_class_names", "voc_palette", "write_mask"]

# The 20 VOC object classes in the order every WSSS repository uses; segmentation id = index + 1.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def voc_palette() -> list[int]:
    """The 256-entry VOC colour map (bit-interleaved RGB, as in the VOC devkit's `labelcolormap`)."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = voc_palette()


def write_mask(path: str | os.PathLike[str], mask: np.ndarray, compress_level: int = 1) -> None:
    """Write a uint8 label map as a palette PNG (the format of VOC's SegmentationClass)."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(_PALETTE)
    image.save(path, compress_level=compress_level)


def mask_labels(mask: np.ndarray, num_objects: int) -> np.ndarray:
    """Multi-hot float32 image labels over the object classes (no background) of a label map."""
    present = np.unique(mask)
    vec = np.zeros(num_objects, dtype=np.float32)
    vec[present[(present > 0) & (present != IGNORE_INDEX)] - 1] = 1.0
    return vec


def read_class_names(root: Path) -> tuple[str, ...]:
    """Object class names from `class_names.txt` (one per line, background excluded), else VOC's 20."""
    path = root / "class_names.txt"
    if not path.exists():
        return VOC_CLASSES
    names = tuple(line.strip() for line in read_text(path, DataError).splitlines() if line.strip())
    if not names:
        raise DataError(f"{path}: no class names")
    if "background" in (n.lower() for n in names):
        raise DataError(f"{path}: list object classes only; 'background' is implicit as id 0")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:  # each name keys a class in reports and `wsss eval --json`
        raise DataError(f"{path}: class names listed more than once: {repeated[:5]}")
    if len(names) >= IGNORE_INDEX:
        raise DataError(f"{path}: {len(names)} classes; at most {IGNORE_INDEX - 1} fit in a uint8 mask")
    return names
