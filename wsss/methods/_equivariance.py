"""The losses and read-outs SEAM (train_SEAM.py, infer_SEAM.py) and CPN (train_cpn.py, infer_cam.py, built
on SEAM's code) share: classification on the object channels, SEAM's min-pooling loss, equivariant
regularisation, OHEM, min-max normalisation, and the two-view forward pass."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.models.seam import SeamNet


def min_pool_loss(maps: torch.Tensor) -> torch.Tensor:
    """SEAM's adaptive min-pooling loss: the per-pixel max over (labelled) object channels, its lowest
    quarter of pixels, ReLU, mean. Pushes the least activated pixels' refined CAMs towards 0."""
    lowest = maps.amax(1).flatten(1)
    k = max(1, lowest.shape[1] // 4)
    return F.relu(torch.topk(lowest, k, dim=1, largest=False).values).mean()


def ohem(errors: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of each image's top `fraction` of entries (SEAM's ECR, CPN's CPCR)."""
    flat = errors.flatten(1)
    k = max(1, int(flat.shape[1] * fraction))
    return torch.topk(flat, k, dim=1).values.mean()


def equivariant_regularisation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """ER: mean L1 distance between the object channels of the two views' normalised CAMs, the first
    already brought into the second's frame (SEAM uses L1; its L2 variant is commented out)."""
    return (first[:, 1:] - second[:, 1:]).abs().mean()


def min_max(total: torch.Tensor) -> torch.Tensor:
    """`infer_SEAM.py` (and CPN's): negatives clipped, then per class (x - min - 1e-5) /
    (max - min + 1e-5), values within 1e-5 of the minimum set to 0."""
    total = total.clamp(min=0)
    low = total.amin(dim=(1, 2), keepdim=True)
    high = total.amax(dim=(1, 2), keepdim=True)
    return ((total - low - 1e-5) / (high - low + 1e-5)).clamp(min=0)


def classification(cam: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft margin on the GAP of the object channels (the background channel is unscored)."""
    return F.multilabel_soft_margin_loss(cam[:, 1:].mean(dim=(2, 3)), labels)


def views(model: SeamNet, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CAMs, refined CAMs) upsampled to the input size (align_corners=True, as SEAM)."""
    cam, refined = model(images)
    size = images.shape[-2:]
    return tuple(F.interpolate(t, size, mode="bilinear", align_corners=True) for t in (cam, refined))  # type: ignore[return-value]
