"""Refine's confident labels with the dense CRF (two per image, voc12's settings) on VOC-size images:
images per second in one process and on the process pool of `runtime.threads` (issue 25 item 3).

python tests/benchmarks/bench_crf.py [--images 24] [--threads 1 2] [--workdir /tmp/bench-crf]

Images: wsss's synthetic generator at VOC's size (sides 437 px +- 15%). CAMs: smooth random maps for
two present classes, written as a seed stage's CAM files (the CRF's cost depends on the image size
and its iterations, not on what the CAMs say). Run it alone: it times CPU work.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import wsss
from wsss.runtime import Runtime
from wsss.stages.cam_files import CAM_DIR, cam_path, save_cams
from wsss.stages.confident import write_confident_labels


def _smooth_cams(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Two (H, W) maps in [0, 1]: coarse noise upsampled, as a stride-16 network's CAMs are."""
    coarse = torch.from_numpy(rng.random((1, 2, shape[0] // 16 + 1, shape[1] // 16 + 1), dtype=np.float32))
    return torch.nn.functional.interpolate(coarse, size=shape, mode="bilinear")[0].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-crf"))
    args = parser.parse_args()
    data_dir = args.workdir / "data"
    if not (data_dir / "synth.json").exists():
        spec = wsss.SynthSpec(train=args.images, val=2, size=437, classes=20, seed=0, size_jitter=0.15)
        wsss.generate_synthetic(spec, data_dir)
    cfg = wsss.load_config(
        "voc12",
        [
            "data.train_split=train",
            "data.eval_split=train",
            "data.mask_dir=SegmentationClass",
            "data.eval_mask_dir=SegmentationClass",
            "runtime.progress=false",
        ],
    )
    data = wsss.prepare_dataset(cfg, str(data_dir), args.workdir / "cache")
    seed_dir = args.workdir / "seed"
    (seed_dir / CAM_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id in data.train_ids:
        h, w = data.read_image(image_id).shape[:2]
        save_cams(cam_path(seed_dir, image_id), np.array([0, 1]), _smooth_cams(rng, (h, w)))
    print(f"{len(data.train_ids)} images, CRF {cfg.refine.crf.iterations} iterations, two per image")
    for threads in args.threads:
        runtime = Runtime(torch.device("cpu"), progress=False, threads=threads)
        start = time.perf_counter()
        write_confident_labels(cfg.refine, data, seed_dir, args.workdir / f"labels-{threads}", runtime)
        seconds = time.perf_counter() - start
        print(f"threads {threads}: {seconds:.1f} s, {len(data.train_ids) / seconds:.2f} images/s")


if __name__ == "__main__":
    main()
