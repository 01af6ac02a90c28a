"""Paired (image, mask) transforms on tensors. Masks are resized with nearest and padded with 255,
so labels are never interpolated (torchvision references/segmentation/transforms.py does the same)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from wsss.config import TrainConfig
from wsss.data.classes import IGNORE_INDEX

# Every reference repo (psa, irn, SEAM, CPN) normalises with the ImageNet statistics.
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> normalised (3, H, W) float32."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    return (t - IMAGENET_MEAN) / IMAGENET_STD


def denormalize(t: torch.Tensor) -> np.ndarray:
    """Normalised (3, H, W) -> (H, W, 3) uint8, for CRF and pictures."""
    rgb = (t.cpu() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1).mul(255).round().byte()
    return rgb.permute(1, 2, 0).numpy()


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) times `scale`, rounded, at least 1 pixel each."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (C, H, W) or (N, C, H, W) float tensor, antialiased when shrinking."""
    batch = t if t.dim() == 4 else t[None]
    shrink = size[0] < batch.shape[-2] or size[1] < batch.shape[-1]
    out = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out if t.dim() == 4 else out[0]


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(mask.dtype)


class TrainTransform:
    """psa's order: random long-side resize (unless `random_rescale` is off, as in psa's AffinityNet
    training), flip, colour jitter, normalise, random crop (pad 0 / 255).

    The image stays uint8 through resize and flip (torchvision's uint8 bilinear kernel: 0.6 ms against
    3.0 ms in float for a VOC image upscaled), goes to [0, 1] floats only for the colour jitter (whose
    uint8 path converts to float for hue anyway, and whose blends run slower in uint8), and only the
    cropped region is normalised (normalising a whole upscaled image cost more than everything else).
    Normalising is per pixel, so cropping first changes nothing; jitter still sees the whole image,
    as contrast's mean does in psa. docs/benchmarks.md, "Loaders".
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        b, c, s, h = cfg.color_jitter
        self.jitter = (
            v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h) if any(cfg.color_jitter) else None
        )

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None, fill: int = IGNORE_INDEX
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image, mask) augmented alike; the mask (any integer map) is `fill` outside the image."""
        cfg = self.cfg
        img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        m = torch.from_numpy(np.ascontiguousarray(mask)).long() if mask is not None else None
        if cfg.random_rescale:
            height, width = img.shape[-2:]
            long_side = int(torch.randint(cfg.resize_long[0], cfg.resize_long[1] + 1, ()).item())
            scale = long_side / max(height, width)
            size = scaled_size(height, width, scale)
            # antialiased when shrinking, as resize_image; torchvision's uint8 bilinear kernel
            img = v2.functional.resize(img, list(size), antialias=size[0] < height or size[1] < width)
            m = resize_mask(m, size) if m is not None else None
        if cfg.hflip and torch.rand(()) < 0.5:
            img = img.flip(-1)
            m = m.flip(-1) if m is not None else None
        if self.jitter is not None:
            img = self.jitter(img.contiguous().float().div_(255.0))
        return self._crop(img, m, fill)

    def _crop(
        self, img: torch.Tensor, m: torch.Tensor | None, fill: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A random crop of `img` (uint8, or floats in [0, 1]), normalised, padded with zeros."""
        crop = self.cfg.crop_size
        height, width = img.shape[-2:]
        out = torch.zeros((3, crop, crop))  # zero after normalisation = the mean colour
        out_m = torch.full((crop, crop), fill, dtype=torch.long) if m is not None else None
        # Where the image is smaller than the crop it is placed at a random offset inside the padding.
        ch, cw = min(crop, height), min(crop, width)
        sy = int(torch.randint(0, height - ch + 1, ()).item())
        sx = int(torch.randint(0, width - cw + 1, ()).item())
        dy = int(torch.randint(0, crop - ch + 1, ()).item())
        dx = int(torch.randint(0, crop - cw + 1, ()).item())
        # contiguous first: uint8 images come channels-last from numpy and torchvision's resize,
        # and arithmetic on that layout ran 5x slower
        region = img[:, sy : sy + ch, sx : sx + cw].contiguous()
        region = region.float().div_(255.0) if region.dtype == torch.uint8 else region
        out[:, dy : dy + ch, dx : dx + cw] = (region - IMAGENET_MEAN) / IMAGENET_STD
        if m is not None and out_m is not None:
            out_m[dy : dy + ch, dx : dx + cw] = m[sy : sy + ch, sx : sx + cw]
        return out, out_m
