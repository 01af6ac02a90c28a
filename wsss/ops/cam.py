"""Multi-scale, flipped CAM inference and the background conventions built on CAMs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.data.transforms import resize_image, scaled_size


def _plain_cams(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.cams(x)  # type: ignore[operator]


def max_normalise(total: torch.Tensor) -> torch.Tensor:
    """psa / irn: each class map divided by its max (+1e-5)."""
    return total / (total.amax(dim=(1, 2), keepdim=True) + 1e-5)


@torch.no_grad()
def multiscale_cams(
    model: nn.Module,
    image: torch.Tensor,
    keys: np.ndarray,
    scales: tuple[float, ...],
    flip: bool,
    device: torch.device,
    read: Callable[[nn.Module, torch.Tensor], torch.Tensor] = _plain_cams,
    normalise: Callable[[torch.Tensor], torch.Tensor] = max_normalise,
) -> torch.Tensor:
    """(P, H, W) CAMs of the present classes `keys` for a normalised (3, H, W) image.

    As psa's infer_cls / irn's make_cam: sum over scales of (CAM + flipped-back CAM of the flipped
    image), each upsampled to the image size, then `normalise`d: by default each class map divided by
    its max (+1e-5), no min subtraction, so the maps are in [0, 1] and comparable with a constant
    background threshold. A seed method may read other maps (`read`, e.g. SEAM's refined CAMs) and
    normalise otherwise (SEAM: min-max).
    """
    return batch_multiscale_cams(model, image[None], [keys], scales, flip, device, read, normalise)[0]


@torch.no_grad()
def batch_multiscale_cams(
    model: nn.Module,
    images: torch.Tensor,
    keys: Sequence[np.ndarray],
    scales: tuple[float, ...],
    flip: bool,
    device: torch.device,
    read: Callable[[nn.Module, torch.Tensor], torch.Tensor] = _plain_cams,
    normalise: Callable[[torch.Tensor], torch.Tensor] = max_normalise,
) -> list[torch.Tensor]:
    """multiscale_cams for a batch of normalised (B, 3, H, W) images of one size, each with its own
    present classes: one forward per scale for the whole batch and its flips (B = 1 gives exactly
    the single-image maps: the flips are added before the classes are picked either way)."""
    count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    index = [torch.as_tensor(k, dtype=torch.long, device=device) for k in keys]
    totals = [torch.zeros((len(k), height, width), device=device) for k in keys]
    for scale in scales:
        size = scaled_size(height, width, scale)
        x = resize_image(images, size).to(device)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        maps = read(model, x).float()
        maps = maps[:count] + maps[count:].flip(-1) if flip else maps
        for i in range(count):
            cam = maps[i].index_select(0, index[i])[None]
            totals[i] += F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)[0]
    return [normalise(total) for total in totals]


def background_power(cams: np.ndarray, alpha: float) -> np.ndarray:
    """psa's background score (1 - max_c CAM_c)^alpha; a pixel is foreground iff max CAM exceeds it."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(cams.shape[1:], np.float32)
    return np.power(1.0 - peak, alpha)


def labels_from_scores(scores: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Argmax over [background; present classes] as dataset ids (0 = background, key + 1 otherwise).

    Ties go to the background, as with argmax over psa's background-first stack.
    """
    lookup = np.concatenate([[0], np.asarray(keys) + 1]).astype(np.uint8)
    return lookup[np.argmax(scores, axis=0)]


def cams_to_mask(cams: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Segmentation from CAMs with a constant background plane `threshold` (CAM-seed evaluation)."""
    bg = np.full((1, *cams.shape[1:]), threshold, dtype=np.float32)
    return labels_from_scores(np.concatenate([bg, cams.astype(np.float32)]), keys)
