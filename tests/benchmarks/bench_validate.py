"""The up-front dataset check on a VOC-sized dataset: 10,000 images of 500 x 375 px (VOC's typical
size) with palette-PNG masks, labels from cls_labels.npy as psa ships them.

Prints the cold check (every image decoded, every mask read) on 1 and on all threads, the check when
a passed check is cached, and, for scale, a full-resolution decode of every image.

python tests/benchmarks/bench_validate.py [--images 10000] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.config import DataConfig
from wsss.data.classes import write_mask
from wsss.data.voc import open_dataset

WIDTH, HEIGHT = 500, 375


def _write_one(args: tuple[Path, str, int]) -> None:
    root, image_id, seed = args
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = rng.uniform(40, 200, 3)
    image = base + 30 * np.sin(xx[..., None] / rng.uniform(8, 40) + rng.uniform(0, 6, 3))
    image += rng.normal(0, 12, (HEIGHT, WIDTH, 3))  # texture, so JPEGs are VOC-sized (~60 KB)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    for _ in range(rng.integers(1, 4)):
        cy, cx, r = rng.integers(60, HEIGHT - 60), rng.integers(60, WIDTH - 60), rng.integers(20, 60)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        mask[inside] = rng.integers(1, 21)
        image[inside] = rng.uniform(0, 255, 3)
        ring = np.abs(np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r) < 2
        mask[ring] = 255
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
        root / "JPEGImages" / f"{image_id}.jpg", quality=90
    )
    write_mask(root / "SegmentationClass" / f"{image_id}.png", mask)


def make_dataset(root: Path, images: int) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"2007_{i:06d}" for i in range(images)]
    val = min(1449, images // 7)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_one, [(root, i, n) for n, i in enumerate(ids)], chunksize=64))
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[val:]) + "\n")
    (root / "ImageSets/Segmentation/val.txt").write_text("\n".join(ids[:val]) + "\n")
    labels = {i: np.eye(20, dtype=np.float32)[n % 20] for n, i in enumerate(ids[val:])}
    np.save(root / "cls_labels.npy", labels, allow_pickle=True)  # psa's format, read without unpickling


def _timed(label: str, fn: object, count: int) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"{label:52s} {seconds:8.2f} s  {count / seconds:8.0f} images/s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--workdir", type=Path, help="reuse or keep the generated dataset here")
    parser.add_argument("--keep", action="store_true", help="keep the generated dataset")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-validate-"))
    root = work / "voc-like"
    try:
        if not (root / "cls_labels.npy").exists():
            start = time.perf_counter()
            make_dataset(root, args.images)
            print(
                f"generated {args.images} images of {WIDTH}x{HEIGHT} in {time.perf_counter() - start:.0f} s"
            )
        jpeg_kb = np.mean([p.stat().st_size for p in list((root / "JPEGImages").iterdir())[:500]]) / 1024
        print(f"dataset: {root} ({jpeg_kb:.0f} KB per JPEG), {os.cpu_count()} CPU cores")
        threads = os.cpu_count() or 1
        for workers in sorted({1, threads}):
            cache = work / f"cache-{workers}"
            shutil.rmtree(cache, ignore_errors=True)
            _timed(
                f"open + check, cold, {workers} thread(s)",
                lambda w=workers, c=cache: open_dataset(root, DataConfig(), c, workers=w),
                args.images,
            )
        _timed(
            f"open + check, passed check cached ({threads} threads)",
            lambda: open_dataset(root, DataConfig(), work / f"cache-{threads}", workers=threads),
            args.images,
        )
        images = sorted((root / "JPEGImages").iterdir())

        def full_decode() -> None:
            for path in images:
                with Image.open(path) as image:
                    image.convert("RGB")

        _timed("for scale: full-resolution decode of every JPEG, 1 thread", full_decode, args.images)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
