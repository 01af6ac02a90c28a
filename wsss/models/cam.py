"""The CAM network: backbone features -> 1x1 bias-free classifier (Zhou et al. 2016; psa, irn)."""

from __future__ import annotations

from collections.abc import Callable

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
        # psa's dropout7 (Dropout2d before pooling and fc8); an identity in eval mode, so CAMs are unaffected
        self.dropout = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.backbone(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(pooled).flatten(1)

    def logits_and_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores and raw (pre-ReLU) class maps from one forward pass, for methods that need both."""
        maps = self.classifier(self.features(x))
        return maps.mean(dim=(2, 3)), maps

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.classifier(self.features(x)))

    @property
    def stage_names(self) -> list[str] | None:
        """The backbone modules that end each feature stage, in order (timm's `feature_info`: ResNet's
        act1/layer1..4, EfficientNet's blocks.0/1/2/4/6); None for a backbone without them."""
        info = getattr(self.backbone, "feature_info", None)
        return [info.module_name(i) for i in range(len(info))] if info is not None else None

    def logits_and_cams_mixed(
        self, x: torch.Tensor, stage: int, mix: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Manifold Mixup's hook (Verma et al. 2019): apply `mix` to the hidden state after backbone
        stage `stage` (0 = the input image), then finish the forward pass. The mix is a forward hook on
        the stage's last module, so it works on every timm feature extractor, whatever its forward."""
        if stage == 0:
            return self.logits_and_cams(mix(x))
        names = self.stage_names
        if names is None or not 1 <= stage <= len(names):
            raise ValueError(f"stage {stage} is not a stage of this backbone ({len(names or [])} stages)")
        module = self.backbone.get_submodule(names[stage - 1])
        handle = module.register_forward_hook(lambda _module, _inputs, output: mix(output))
        try:
            return self.logits_and_cams(x)
        finally:
            handle.remove()
