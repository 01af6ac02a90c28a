"""What one complementary-patch pair costs per image, on one core (goal: a superpixel pair costs at
most a grid pair, <= 0.006 s per image including amortised SLIC). Two superpixel figures: what every
training step pays (masks + map augmentation, to compare with the grid pair) and that plus SLIC
amortised over one training of --epochs (the cache also serves every later trial and search with the
same setting, so a search pays less).

python tests/benchmarks/bench_cp_pairs.py [--images 32] [--epochs 8] [--crop 448] [--superpixels 300]

Three ways, on VOC-size (500 x 375) textured images and `--crop` crops:
- reference-style: SLIC on every normalised crop, then a per-pixel Python loop that marks the
  hidden superpixels (the way CPN's data loader builds a pair);
- grid: wsss.methods.cpn.grid_masks on a batch;
- superpixel: SLIC once per image (wsss.data.image_maps, cost divided by --epochs, as the cache is
  reused every epoch and by every later trial with the same setting), the cached map augmented with
  the image, and wsss.methods.cpn.superpixel_masks on a batch.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from skimage.segmentation import slic

from wsss.config import TrainConfig
from wsss.data.image_maps import slic_labels
from wsss.data.transforms import TrainTransform
from wsss.methods.cpn import grid_masks, superpixel_masks


def _images(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Smooth blobs on a gradient, so SLIC has structure to follow (noise gives it none)."""
    out = []
    ys, xs = np.mgrid[0:375, 0:500]
    for _ in range(count):
        image = np.stack([xs * 0.4, ys * 0.5, (xs + ys) * 0.2], -1)
        for _ in range(6):
            cy, cx, r = rng.integers(0, 375), rng.integers(0, 500), rng.integers(30, 120)
            image[(ys - cy) ** 2 + (xs - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        out.append(np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8))
    return out


def reference_style(crop: np.ndarray, segments: int, rng: np.random.Generator) -> None:
    normalised = (crop / 255.0 - 0.45) / 0.225
    spx = slic(normalised, compactness=10, n_segments=segments, start_label=1)
    drawn = set(rng.integers(0, spx.max() + 1, (spx.max() + 1) // 2).tolist())
    sign = np.ones(crop.shape[:2], np.float32)
    for i in range(crop.shape[0]):  # the per-pixel loop
        for j in range(crop.shape[1]):
            if spx[i, j] in drawn:
                sign[i, j] = 0


def _per_image(work: Callable[[], object], images: int, repeats: int = 5) -> float:
    """Seconds per image of `work` over `images` images: the fastest of `repeats` runs after a
    warm-up, so a busy moment on a shared machine does not count."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--crop", type=int, default=448)
    parser.add_argument("--superpixels", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = _images(args.images, rng)
    train = TrainConfig(crop_size=args.crop, resize_long=(448, 768))
    transform = TrainTransform(train)

    start = time.perf_counter()
    for image in images[: max(2, args.images // 8)]:  # the slow one on a few images
        reference_style(image[: args.crop, : args.crop], args.superpixels, rng)
    reference = (time.perf_counter() - start) / max(2, args.images // 8)

    mean_long = sum(train.resize_long) / 2
    start = time.perf_counter()
    maps = []
    for image in images:
        scale = mean_long / max(image.shape[:2])
        segments = round(args.superpixels * image.shape[0] * image.shape[1] * scale**2 / args.crop**2)
        maps.append(slic_labels(image, segments, 10.0))
    slic_once = (time.perf_counter() - start) / len(images)

    crops = [transform(image, spx, -1) for image, spx in zip(images, maps, strict=True)]
    stacked = [
        torch.stack([spx for _, spx in crops[i : i + args.batch]]) for i in range(0, len(crops), args.batch)
    ]
    superpixel_draw = _per_image(lambda: [superpixel_masks(spx) for spx in stacked], len(images))
    cpu = torch.device("cpu")
    grid = _per_image(
        lambda: [grid_masks(len(spx), (args.crop, args.crop), (1, 2), 0.5, cpu) for spx in stacked],
        len(images),
    )
    # Augmenting the map with the image (nearest resize, flip, crop) is the superpixel pair's extra.
    with_map = _per_image(
        lambda: [transform(i, spx, -1) for i, spx in zip(images, maps, strict=True)], len(images)
    )
    without_map = _per_image(lambda: [transform(i) for i in images], len(images))
    recurring = superpixel_draw + (with_map - without_map)
    superpixel = recurring + slic_once / args.epochs

    print(
        f"images {args.images}, crop {args.crop}, S_N {args.superpixels}, batches of {args.batch}, one core"
    )
    print(f"reference-style (SLIC + per-pixel loop per crop): {reference:.4f} s/image")
    print(f"grid pair:                                        {grid:.5f} s/image")
    print(
        f"superpixel pair, every step: {recurring:.5f} s/image = masks {superpixel_draw:.5f} "
        f"+ map augmentation {with_map - without_map:.5f} ({recurring / grid:.2f}x the grid pair)"
    )
    print(
        f"superpixel pair with SLIC:   {superpixel:.5f} s/image = every step + SLIC once {slic_once:.4f} "
        f"/ {args.epochs} epochs"
    )
    print(f"speed-up over the reference-style loop: {reference / superpixel:.0f}x")


if __name__ == "__main__":
    main()
