"""Multi-scale, flipped CAM inference and the background conventions built on CAMs."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsss.data.transforms import resize_image
from wsss.models.cam import CamNet


@torch.no_grad()
def multiscale_cams(
    model: CamNet,
    image: torch.Tensor,
    keys: np.ndarray,
    scales: tuple[float, ...],
    flip: bool,
    device: torch.device,
) -> torch.Tensor:
    """(P, H, W) CAMs of the present classes `keys` for a normalised (3, H, W) image.

    As psa's infer_cls / irn's make_cam: sum over scales of (CAM + flipped-back CAM of the flipped
    image), each upsampled to the image size, then each class map divided by its max (+1e-5). No min
    subtraction, so the maps are in [0, 1] and comparable with a constant background threshold.
    """
    height, width = image.shape[-2:]
    index = torch.as_tensor(keys, dtype=torch.long, device=device)
    total = torch.zeros((len(keys), height, width), device=device)
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = resize_image(image, size)[None].to(device)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        cams = model.cams(x).float().index_select(1, index)
        cam = cams[0] + cams[1].flip(-1) if flip else cams[0]
        total += F.interpolate(cam[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    total /= total.amax(dim=(1, 2), keepdim=True) + 1e-5
    return total


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
