"""Per-image maps a seed method needs beside each training image (CPN's superpixels), computed once
per image and setting and cached beside the dataset's other caches, so that a training step costs a
file read instead of the computation. The reference CPN runs SLIC and a per-pixel Python loop on
every crop, which makes its data loader the bottleneck (1.45 s per image).

The maps are integer label maps of the whole image; the data pipeline crops, flips and resizes them
with the image like a mask (nearest neighbour), filling what lies outside the image with `fill`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.segmentation import slic

from wsss.data.voc import VocDataset

log = logging.getLogger(__name__)

# SLIC runs at a resolution where one superpixel covers about this many pixels (10 x 10): boundaries
# land within a few pixels of full-resolution SLIC's, at a fraction of its cost on VOC-size images.
_PIXELS_PER_SEGMENT = 100


@dataclass(frozen=True)
class ImageMaps:
    """What to compute for each image; `key` names the setting (it keys the cache)."""

    key: str
    compute: Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 -> (H, W) integer map
    fill: int = -1  # the map's value outside the image after cropping


def slic_labels(image: np.ndarray, segments: int, compactness: float) -> np.ndarray:
    """(H, W) int16 superpixel ids 0..S-1 (scikit-image's SLIC on the RGB image)."""
    height, width = image.shape[:2]
    scale = min(1.0, math.sqrt(_PIXELS_PER_SEGMENT * segments / (height * width)))
    small = image
    if scale < 1:
        size = (max(8, round(width * scale)), max(8, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    labels = slic(small, n_segments=segments, compactness=compactness, start_label=0).astype(np.int32)
    if labels.shape != (height, width):
        labels = np.asarray(Image.fromarray(labels).resize((width, height), Image.Resampling.NEAREST))
    return labels.astype(np.int16)


class CachedMaps:
    """Maps of `ids`, computed on `workers` threads where missing and read back per image.

    With a cache folder they live in `<cache>/image_maps/<dataset fingerprint>-<key>/<id>.npy`
    (written atomically, read without unpickling, recomputed if damaged); without one, in memory.
    """

    def __init__(
        self, data: VocDataset, spec: ImageMaps, ids: Sequence[str], cache_dir: Path | None, workers: int
    ) -> None:
        self.data, self.spec = data, spec
        self.folder = cache_dir / "image_maps" / f"{data.fingerprint}-{spec.key}" if cache_dir else None
        self.memory: dict[str, np.ndarray] = {}
        missing = [i for i in ids if self._read(i, header_only=True) is None]
        if missing:
            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                list(pool.map(self._build, missing))
            seconds = time.perf_counter() - start
            log.info("%s maps for %d images in %.1f s (%s)", spec.key, len(missing), seconds, self.folder)

    def _path(self, image_id: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{image_id}.npy"

    def _read(self, image_id: str, header_only: bool = False) -> np.ndarray | None:
        """The cached map, or None if missing or damaged; `header_only` checks shape and dtype from
        the .npy header (memory-mapped) without reading the data, for the up-front check."""
        if self.folder is None:
            return self.memory.get(image_id)
        try:
            labels = np.load(self._path(image_id), allow_pickle=False, mmap_mode="r" if header_only else None)
        except (OSError, ValueError, EOFError):
            return None
        height, width = self.data.image_size(image_id)
        if labels.shape != (height, width) or labels.dtype != np.int16:
            log.warning("%s: damaged cached map, recomputing it", self._path(image_id))
            return None
        return labels

    def _build(self, image_id: str) -> None:
        labels = self.spec.compute(self.data.read_image(image_id)).astype(np.int16)
        if self.folder is None:
            self.memory[image_id] = labels
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{image_id}.{os.getpid()}.{time.monotonic_ns()}.npy"
        np.save(tmp, labels, allow_pickle=False)
        os.replace(tmp, self._path(image_id))

    def __call__(self, image_id: str) -> np.ndarray:
        labels = self._read(image_id)
        if labels is None:  # removed or damaged since the check: compute it again
            self._build(image_id)
            labels = self._read(image_id)
        assert labels is not None
        return labels
