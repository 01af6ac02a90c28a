"""The CAM network: backbone features -> 1x1 bias-free classifier (Zhou et al. 2016; psa, irn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import BackboneConfig
from wsss.models.backbone import SplitParams, create_backbone, feature_channels


class CamNet(SplitParams):
    """Logits = classifier(GAP(features)); CAM = ReLU(classifier over the feature map).

    The classifier is linear without bias, so GAP before or after it gives the same logits.
    """

    def __init__(self, cfg: BackboneConfig, num_classes: int) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg)
        self.classifier = nn.Conv2d(feature_channels(self.backbone)[-1], num_classes, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)  # psa's fc8 init

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(pooled).flatten(1)

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores and raw (pre-ReLU) class maps from one forward pass, for methods that need both."""
        maps = self.classifier(self.features(x))
        return maps.mean(dim=(2, 3)), maps

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.classifier(self.features(x)))
