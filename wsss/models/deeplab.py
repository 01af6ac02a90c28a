"""DeepLab-v2 (Chen et al., TPAMI 2017): ASPP as parallel dilated 3x3 classifiers whose outputs are summed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import BackboneConfig
from wsss.models.backbone import SplitParams, create_backbone, feature_channels


class DeepLabV2(SplitParams):
    def __init__(
        self, cfg: BackboneConfig, num_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg)
        channels = feature_channels(self.backbone)[-1]
        self.aspp = nn.ModuleList(
            nn.Conv2d(channels, num_classes, 3, padding=rate, dilation=rate, bias=True) for rate in rates
        )
        for conv in self.aspp:  # kazuto1011's init
            assert isinstance(conv, nn.Conv2d) and conv.bias is not None
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits upsampled to the input size."""
        feat = self.backbone(x)[-1]
        logits = torch.stack([conv(feat) for conv in self.aspp]).sum(0)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
