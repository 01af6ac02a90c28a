"""The up-front dataset check: before any stage trains, every listed image decodes and every listed
mask exists, matches its image's size and holds only valid class ids.

Without it a broken val mask surfaces after the seed and refine stages have run (hours on VOC).
It is cheap enough to run every time: JPEGs are decoded at 1/8 scale (libjpeg still reads every
entropy-coded byte, so truncation and corruption are found; the size comes from the header), masks
are palette PNGs decoded once, files are checked on a thread pool (PIL releases the GIL while it
decodes), and a passed check is remembered under the cache folder, keyed on the dataset fingerprint
and every checked file's size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from wsss.data.image_files import decoded_size, read_mask
from wsss.errors import DataError


class ListedFiles(Protocol):
    """One listed image and its mask, as found on disk."""

    @property
    def image(self) -> Path: ...
    @property
    def mask(self) -> Path: ...
    @property
    def image_mtime_ns(self) -> int: ...
    @property
    def mask_mtime_ns(self) -> int: ...


class DatasetListing(Protocol):
    """What the check reads of a dataset (wsss.data.voc.VocDataset provides it; that module calls
    this one, so it is not imported here)."""

    @property
    def root(self) -> Path: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def num_classes(self) -> int: ...
    def ids(self, split: str) -> tuple[str, ...]: ...
    def entry(self, image_id: str) -> ListedFiles: ...
    def image_path(self, image_id: str) -> Path: ...
    def mask_path(self, image_id: str) -> Path: ...


log = logging.getLogger(__name__)

CHECK_VERSION = 2  # bump when the check gets stricter, so earlier passes are not trusted


def check_pair(image: Path, mask: Path, num_classes: int) -> str | None:
    """The problem with one image and its mask, or None."""
    try:
        height, width = decoded_size(image)
        labels = read_mask(mask, num_classes)
    except DataError as exc:
        return str(exc)
    if labels.shape != (height, width):
        return f"{mask}: mask is {labels.shape[1]}x{labels.shape[0]} but its image is {width}x{height}"
    return None


def _stamp(data: DatasetListing, ids: list[str]) -> str:
    h = hashlib.sha256(json.dumps([CHECK_VERSION, data.fingerprint, data.num_classes]).encode())
    for image_id in ids:
        entry = data.entry(image_id)
        h.update(
            f"{image_id}:{entry.image}:{entry.image_mtime_ns}:{entry.mask}:{entry.mask_mtime_ns};".encode()
        )
    return h.hexdigest()[:20]


def validate_dataset(
    data: DatasetListing, splits: Iterable[str], cache_dir: Path | None, workers: int = 1
) -> None:
    """Check every image and mask of `splits`; raise one DataError naming the first bad file (and how
    many more there are), or return. A pass is cached under `cache_dir/validated/`."""
    ids = list(dict.fromkeys(i for split in splits for i in data.ids(split)))
    marker = cache_dir / "validated" / f"{_stamp(data, ids)}.json" if cache_dir is not None else None
    if marker is not None and marker.is_file():
        return
    start = time.perf_counter()
    pairs = [(data.image_path(i), data.mask_path(i)) for i in ids]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = [
            p for p in pool.map(lambda pair: check_pair(pair[0], pair[1], data.num_classes), pairs) if p
        ]
    seconds = time.perf_counter() - start
    if problems:
        more = f" (and {len(problems) - 1} more bad file(s))" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    log.info("dataset check: %d images and masks are fine (%.1f s)", len(ids), seconds)
    if marker is not None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"images": len(ids), "seconds": round(seconds, 3), "root": str(data.root)}))
        os.replace(tmp, marker)
