"""AffinityNet (Ahn & Kwak, CVPR 2018): a pixel embedding whose L1 distances give affinities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import BackboneConfig
from wsss.errors import ConfigError
from wsss.models.backbone import SplitParams, create_backbone, feature_channels, feature_strides

# psa taps conv4/conv5/conv6 of ResNet-38 and reduces them to 64/128/256 channels, then fuses to 448.
LEVEL_WIDTHS = (64, 128, 256)
EMBED_DIM = 448


class AffinityNet(SplitParams):
    """Embedding at `stride` from three backbone levels: the first level at that stride and the last two.

    With stride 8 on a ResNet these are layer2/3/4, psa's conv4/5/6 taps. Stride 4 (layer1 instead of
    layer2) gives the finer grid irn walks on, needed when objects span only a few stride-8 cells.
    """

    def __init__(self, cfg: BackboneConfig, stride: int = 8) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg)
        strides = feature_strides(self.backbone)
        if stride not in strides[:-2]:
            raise ConfigError(
                f"refine.stride: {cfg.name} has no feature level at stride {stride} (levels: {strides})"
            )
        self.taps = [strides.index(stride), len(strides) - 2, len(strides) - 1]
        channels = [feature_channels(self.backbone)[i] for i in self.taps]
        self.stride = stride
        self.reduce = nn.ModuleList(
            nn.Conv2d(c, w, 1, bias=False) for c, w in zip(channels, LEVEL_WIDTHS, strict=True)
        )
        self.fuse = nn.Conv2d(sum(LEVEL_WIDTHS), EMBED_DIM, 1, bias=False)
        for conv in self.reduce:
            assert isinstance(conv, nn.Conv2d)
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.fuse.weight, gain=4)  # psa's init for the fusing layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        levels = [features[i] for i in self.taps]
        size = levels[0].shape[-2:]
        parts = []
        for conv, feat in zip(self.reduce, levels, strict=True):
            part = F.elu(conv(feat))
            if part.shape[-2:] != size:
                part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            parts.append(part)
        return F.elu(self.fuse(torch.cat(parts, dim=1)))


def affinity(f_a: torch.Tensor, f_b: torch.Tensor) -> torch.Tensor:
    """a_ij = exp(-mean_c |f_i - f_j|) over the channel dim 1 (psa, eq. 2)."""
    return torch.exp(-(f_a - f_b).abs().mean(dim=1))
