"""The sub-category teacher (mva-wsss): a timm ViT with its classification head removed
(`num_classes=0`, so it returns pooled embeddings) plus a linear head over the parent classes."""

from __future__ import annotations

import timm
import torch
from torch import nn

from wsss.errors import ConfigError, WsssError
from wsss.models.backbone import SplitParams


class VitTeacher(SplitParams):
    def __init__(self, name: str, num_classes: int, size: int, depth: int, pretrained: bool) -> None:
        super().__init__()
        if name not in timm.list_models("vit_*"):
            raise ConfigError(f"seed.params.teacher: {name!r} is not a timm ViT (timm.list_models('vit_*'))")
        extra = {"depth": depth} if depth else {}
        try:
            self.backbone = timm.create_model(
                name, pretrained=pretrained, num_classes=0, img_size=size, **extra
            )
        except OSError as exc:  # hub unreachable
            raise WsssError(
                f"seed.params.teacher_pretrained: could not download weights for {name!r} ({exc}); pre-fill "
                "the Hugging Face cache on this machine or set seed.params.teacher_pretrained=false"
            ) from None
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"seed.params.teacher: {name!r} at size {size}: {str(exc)[:200]}") from None
        self.head = nn.Linear(self.backbone.num_features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled embeddings (mva-wsss clusters these)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
