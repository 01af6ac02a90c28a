"""Is the GPU busy? The whole pipeline on a VOC-size generated set with `voc12`'s settings, on one GPU,
recording per stage: seconds, GPU utilisation (sampled), peak GPU memory, and the seed loader's
images/s per worker count (issue 25 item 7; goal: the GPU busy >= 70% of each training stage's time).

python tests/benchmarks/gpu_check.py [--train 1000] [--val 100] [--workdir /tmp/gpu-check]
    [--workers 8] [--infer-batch 8] [--set KEY=VALUE ...] [--out results.json] [--small]

- Data: wsss's synthetic generator at VOC's size (sides drawn from 437 px +- 15%, mean area about
  500 x 375), `--train` train and `--val` val images, 20 classes.
- Config: the `voc12` preset (ResNet-50, irn's CAM schedule, AffinityNet, DeepLab with MSC training
  and multi-scale + flip val) on the synthetic splits, `backbone.pretrained=false` (the machine may
  reach no weights hub), `runtime.workers` from --workers, `runtime.infer_batch` (images of one size
  per inference forward: CAMs, walk, val) from --infer-batch, one epoch per stage unless --set says
  more; run it with --infer-batch 1 too to see what batching the inference buys.
- Utilisation: `nvidia-smi` sampled every 0.5 s in a thread (torch.cuda.utilization as fallback),
  attributed to the stage running at the time; peak memory from torch's allocator per stage.
- Loader: the seed stage's own dataset and transform (ClassificationSet, TrainTransform) through
  wsss's train_loader at 0, 2, 4 and --workers workers, one pass, no model: images/s.
- --small: 48 train / 12 val images of 128 px and the tiny test backbone, to check the script itself
  on a CPU (nothing it prints then says anything about a GPU).

Where no GPU is available it runs on the CPU and says so; the figures are then not the check's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import wsss
from wsss.data.torchsets import ClassificationSet, train_loader
from wsss.data.transforms import TrainTransform

SMALL = [
    "seed.backbone.name=test_resnet",
    "refine.backbone.name=test_resnet",
    "segment.backbone.name=test_resnet",
    "seed.train.crop_size=96",
    "seed.train.resize_long=[96,128]",
    "refine.train.crop_size=96",
    "refine.train.resize_long=[96,128]",
    "segment.train.crop_size=96",
    "segment.train.resize_long=[96,128]",
    "seed.scales=[1.0]",
    "segment.scales=[1.0]",
    "segment.msc_scales=[1.0,0.5]",
]


class GpuSampler:
    """GPU utilisation (%) every `period` seconds, from nvidia-smi or torch.cuda.utilization."""

    def __init__(self, period: float = 0.5) -> None:
        self.period, self.samples = period, []  # (time, percent)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> float | None:
        if shutil.which("nvidia-smi"):
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if done.returncode == 0 and done.stdout.strip():
                return float(done.stdout.split()[0])
        try:
            return float(torch.cuda.utilization())
        except Exception:  # no NVML: nothing to sample
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic(), value))

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[float]:
        return [v for t, v in self.samples if start <= t <= end]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gpu-check"))
    parser.add_argument("--workers", type=int, default=8, help="runtime.workers (loader processes)")
    parser.add_argument("--infer-batch", type=int, default=8, help="runtime.infer_batch (images a forward)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--out", type=Path, help="write the results here as JSON too")
    parser.add_argument("--small", action="store_true", help="a tiny run to check the script on a CPU")
    return parser


def _config(args: argparse.Namespace) -> Any:
    overrides = [
        "data.train_split=train",
        "data.eval_split=train",
        "data.mask_dir=SegmentationClass",
        "data.eval_mask_dir=SegmentationClass",
        "seed.backbone.pretrained=false",
        "refine.backbone.pretrained=false",
        "segment.backbone.pretrained=false",
        "seed.train.epochs=1",
        "refine.train.epochs=1",
        "segment.train.epochs=1",
        f"runtime.workers={args.workers}",
        f"runtime.infer_batch={args.infer_batch}",
        "runtime.progress=false",
        *(SMALL if args.small else []),
        *args.set,
    ]
    return wsss.load_config("voc12", overrides)


def _loader_rates(cfg: Any, data: Any, workers: list[int], cuda: bool) -> dict[int, float]:
    """Seed-stage training images per second through the loader alone, per worker count."""
    dataset = ClassificationSet(data, data.train_ids, TrainTransform(cfg.seed.train))
    rates = {}
    for count in workers:
        loader = train_loader(dataset, cfg.seed.train.batch_size, 0, count, cuda)
        start, seen = time.perf_counter(), 0
        for batch in loader:
            seen += len(batch[0])
        rates[count] = seen / (time.perf_counter() - start)
        del loader
    return rates


def main() -> None:
    args = _parser().parse_args()
    cuda = torch.cuda.is_available()
    if not cuda:
        print("no CUDA device: running on the CPU; these figures are not the GPU check's", file=sys.stderr)
    if args.small:
        args.train, args.val = min(args.train, 48), min(args.val, 12)
    size = 128 if args.small else 437  # +- 15%: sides 371-503 px, about VOC's 500 x 375 on average
    spec = wsss.SynthSpec(train=args.train, val=args.val, size=size, classes=20, seed=0, size_jitter=0.15)
    data_dir = args.workdir / "data"
    start = time.perf_counter()
    if not (data_dir / "synth.json").exists():
        wsss.generate_synthetic(spec, data_dir)
    generated = time.perf_counter() - start
    cfg = _config(args)
    data = wsss.prepare_dataset(cfg, str(data_dir), args.workdir / "cache")
    store = wsss.StageStore(args.workdir / f"store-{time.strftime('%Y%m%dT%H%M%S')}", args.workdir / "cache")
    stages: list[dict[str, Any]] = []
    with GpuSampler() as sampler:
        began = time.monotonic()
        if cuda:
            torch.cuda.reset_peak_memory_stats()

        def on_stage(outcome: Any) -> None:
            nonlocal began
            now = time.monotonic()
            busy = sampler.between(began, now)
            stages.append(
                {
                    "stage": outcome.stage,
                    "seconds": round(outcome.seconds, 1),
                    "gpu_util_mean": round(float(np.mean(busy)), 1) if busy else None,
                    "gpu_util_p50": round(float(np.median(busy)), 1) if busy else None,
                    "share_of_samples_over_70": round(float(np.mean(np.array(busy) >= 70)), 3)
                    if busy
                    else None,
                    "samples": len(busy),
                    "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
                    "metrics": {k: v for k, v in outcome.metrics.items() if isinstance(v, float)},
                }
            )
            print(json.dumps(stages[-1]), flush=True)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            began = time.monotonic()

        wsss.run_pipeline(cfg, data, store, on_stage=on_stage)
    rates = _loader_rates(cfg, data, sorted({0, 2, 4, args.workers}), cuda)
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "images": {"train": args.train, "val": args.val, "side_px": f"{size} +- 15%"},
        "generate_seconds": round(generated, 1),
        "runtime": {"workers": args.workers, "infer_batch": args.infer_batch},
        "stages": stages,
        "seed_loader_images_per_second": {str(k): round(v, 1) for k, v in rates.items()},
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
