"""How compact the seed artifact's CAM files are, on the CAMs of a real seed stage.

    python tests/benchmarks/bench_cam_files.py STORE/seed/KEY/VERSION [--voc-classes 1.5]

Reads every `cams/<id>.npz` of the seed artifact (either format), rewrites it with
wsss.stages.cam_files into a temporary folder, checks the values read back are the float16 ones bit
for bit, and prints: bytes as raw float16 against the compact files, bytes per pixel and class,
encode/decode milliseconds, and what that makes per VOC-size image (500 x 375, `--voc-classes` object
classes on average). Run it on a seed stage of `../shared/msrc` (docs/benchmarks.md, "CAM files");
nothing of the dataset is written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from wsss.stages.cam_files import CAM_DIR, cam_path, load_cams, save_cams

VOC_PIXELS = 500 * 375


def _shape(path: Path) -> tuple[int, int]:
    """(H, W) from the file itself: the benchmark has no dataset to ask."""
    with np.load(path) as archive:
        array = archive["planes"] if "planes" in archive.files else archive["cams"]
    return int(array.shape[-2]), int(array.shape[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("seed_dir", type=Path)
    parser.add_argument("--voc-classes", type=float, default=1.5)
    args = parser.parse_args()
    files = sorted((args.seed_dir / CAM_DIR).glob("*.npz"))
    if not files:
        parser.error(f"{args.seed_dir / CAM_DIR}: no CAM files")
    raw = packed = pixels = maps = 0
    encode = decode = 0.0
    with tempfile.TemporaryDirectory() as work:
        out = Path(work)
        (out / CAM_DIR).mkdir()
        for path in files:
            shape = _shape(path)
            keys, cams = load_cams(args.seed_dir, path.stem, shape)
            start = time.perf_counter()
            save_cams(cam_path(out, path.stem), keys, cams)
            encode += time.perf_counter() - start
            start = time.perf_counter()
            _, back = load_cams(out, path.stem, shape)
            decode += time.perf_counter() - start
            if not np.array_equal(back, cams.astype(np.float16).astype(np.float32)):
                raise SystemExit(f"{path.name}: values changed on the way through")
            raw += cams.astype(np.float16).nbytes
            packed += cam_path(out, path.stem).stat().st_size
            pixels += cams.shape[1] * cams.shape[2]
            maps += cams.shape[0] * cams.shape[1] * cams.shape[2]
    per_pixel_class = packed / maps
    print(f"{len(files)} images, {maps / pixels:.2f} classes and {pixels / len(files):.0f} pixels an image")
    print(
        f"raw float16 {raw / 2**20:.1f} MiB -> files {packed / 2**20:.1f} MiB ({raw / packed:.2f}x smaller)"
    )
    print(f"{per_pixel_class:.3f} bytes per pixel and class (raw float16: 2)")
    print(f"encode {encode / len(files) * 1e3:.2f} ms, decode {decode / len(files) * 1e3:.2f} ms an image")
    voc = per_pixel_class * VOC_PIXELS * args.voc_classes
    print(
        f"a VOC-size image with {args.voc_classes} classes: {voc / 1024:.0f} KiB "
        f"(raw {2 * VOC_PIXELS * args.voc_classes / 1024:.0f} KiB); "
        f"10,582 images: {voc * 10582 / 2**30:.2f} GiB"
    )


if __name__ == "__main__":
    main()
