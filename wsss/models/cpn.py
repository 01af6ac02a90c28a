"""CPN's network (Zhang et al., ICCV 2021): SEAM's network plus the pixel-region correlation module
(PRCM), as in CPN's `network/resnet38_CPN.py`.

- Seeds y_d as SEAM's (wsss.models.seam.seed_norm and the rest).
- PRCM: a spatial softmax of y_d weighs the 195-channel PCM features f into one region descriptor per
  channel (OCR's SpatialGather); keys = ReLU(1x1 conv 195 -> 192) of the descriptors, queries =
  ReLU(f9 f) (f9 shared with the PCM); map = softmax over pixels of keys . queries / sqrt(1 + K).
- Refined CAM = PCM(y_d, f) + map * y_d.

CPN reshapes the keys from (n, 192, 1 + K, 1) to (n, 1 + K, 192) without transposing, which mixes
channels of different classes into each key; `reference_reshape` reproduces that, the default
transposes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import BackboneConfig
from wsss.models.seam import SeamNet


class CpnNet(SeamNet):
    def __init__(self, cfg: BackboneConfig, num_classes: int, reference_reshape: bool = False) -> None:
        super().__init__(cfg, num_classes)
        self.region = nn.Conv2d(195, 192, 1, bias=False)  # CPN's f10
        nn.init.xavier_uniform_(self.region.weight, gain=4)
        self.reference_reshape = reference_reshape

    def prcm(self, features: torch.Tensor, embedding: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K, h, w) pixel-region correlation maps."""
        n, k = seeds.shape[:2]
        weights = F.softmax(seeds.flatten(2), dim=2)  # each channel's distribution over pixels
        regions = weights @ features.flatten(2).transpose(1, 2)  # (n, 1 + K, 195)
        keys = F.relu(self.region(regions.transpose(1, 2)[..., None]))  # (n, 192, 1 + K, 1)
        keys = keys.reshape(n, k, -1) if self.reference_reshape else keys.flatten(2).transpose(1, 2)
        queries = F.relu(embedding).flatten(2)  # (n, 192, hw)
        similarity = keys @ queries * k**-0.5
        return F.softmax(similarity, dim=-1).view_as(seeds)

    def refine(self, features: torch.Tensor, embedding: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """PCM(y_d, f) + PRCM map * y_d."""
        return super().refine(features, embedding, seeds) + self.prcm(features, embedding, seeds) * seeds
