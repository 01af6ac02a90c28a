"""What one loader worker delivers: each stage's training items per second in one process, one thread.

    python tests/benchmarks/bench_loader.py [--images 48] [--repeats 6] [--against REV]
        [--workdir /tmp/bench-loader] [--preset voc12]

A DataLoader worker reads an image (JPEG decode) and, for refine and segment, a label map (PNG), and
runs the stage's TrainTransform (resize, flip, colour jitter, normalise, crop) under one torch
thread, which is what torch gives each worker. This runs exactly that, per stage, on generated
VOC-size images (sides 437 px +- 15%) with the preset's training settings, and prints items/s: the
rate one worker feeds a GPU, so a stage needs (GPU images/s) / (this) workers.

--against REV also times wsss/data/transforms.py as it was at git revision REV, interleaved with
today's image by image under the same random draws: separate processes differ by up to 1.5x on
this VM (allocator state, neighbours), interleaving cancels that. Alone on the machine; the set is
generated once into --workdir.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import wsss
from wsss.data import transforms

Transform = Callable[..., Any]


def _transforms_at(revision: str, folder: Path) -> Any:
    """The module wsss/data/transforms.py at `revision` (it imports only wsss's stable parts)."""
    root = Path(__file__).resolve().parents[2]
    source = subprocess.run(
        ["git", "show", f"{revision}:wsss/data/transforms.py"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / f"transforms_{revision}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"transforms_{revision}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time(
    variants: dict[str, Transform], data: Any, ids: tuple[str, ...], stage: str, repeats: int
) -> dict[str, float]:
    """Mean seconds per item of each variant (read + transform), interleaved under the same draws."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(repeats):
        order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
        for index, image_id in enumerate(ids):
            for name in order:
                torch.manual_seed(repeat * len(ids) + index)
                start = time.perf_counter()
                # the seed stage's classification set has no label map; refine's and segment's do
                mask = data.read_mask(image_id) if stage != "seed" else None
                variants[name](data.read_image(image_id), mask)
                seconds[name].append(time.perf_counter() - start)
    return {name: float(np.mean(values)) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--against", metavar="REV", help="also time transforms.py at this git revision")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-loader"))
    parser.add_argument("--preset", default="voc12")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data_dir = args.workdir / "data"
    if not (data_dir / "synth.json").exists():
        spec = wsss.SynthSpec(train=args.images, val=4, size=437, classes=20, seed=0, size_jitter=0.15)
        wsss.generate_synthetic(spec, data_dir)
    cfg = wsss.load_config(
        args.preset,
        ["data.train_split=train", "data.mask_dir=SegmentationClass", "data.eval_mask_dir=SegmentationClass"],
    )
    data = wsss.prepare_dataset(cfg, str(data_dir), args.workdir / "cache")
    ids = data.train_ids[: args.images]
    with tempfile.TemporaryDirectory() as folder:
        modules = {"today": transforms}
        if args.against:
            modules[args.against] = _transforms_at(args.against, Path(folder))
        for stage in ("seed", "refine", "segment"):
            train = getattr(cfg, stage).train
            variants = {name: module.TrainTransform(train) for name, module in modules.items()}
            rates = {name: 1 / s for name, s in _time(variants, data, ids, stage, args.repeats).items()}
            jitter = ",".join(f"{v:g}" for v in train.color_jitter)
            setting = (
                f"long side {train.resize_long[0]}-{train.resize_long[1]}"
                if train.random_rescale
                else "no rescale"
            )
            line = "  ".join(f"{name} {rate:6.1f}/s" for name, rate in rates.items())
            if args.against:
                line += f"  ({rates['today'] / rates[args.against]:.2f}x)"
            print(f"{stage:8s} {line}   [{setting}, crop {train.crop_size}, jitter {jitter}]")
    pixels = np.mean([np.prod(data.image_size(i)) for i in ids])
    print(f"{len(ids)} images x {args.repeats}, mean {pixels:.0f} px, torch {torch.__version__}")


if __name__ == "__main__":
    main()
