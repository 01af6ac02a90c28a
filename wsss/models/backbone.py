"""timm backbones by name, as multi-level feature extractors with a chosen output stride."""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn

from wsss.config import BackboneConfig
from wsss.errors import ConfigError, WsssError

log = logging.getLogger(__name__)


def create_backbone(cfg: BackboneConfig) -> nn.Module:
    """A timm `features_only` model returning every stage's features, dilated to `output_stride`.

    With `frozen_bn`, BatchNorm layers become fixed affine layers (timm's FrozenBatchNorm2d), as in psa
    and irn, where batches are small and statistics come from ImageNet.
    """
    if cfg.name not in timm.list_models():
        raise ConfigError(f"backbone.name: unknown timm model {cfg.name!r}")
    overlay = {}
    if cfg.weights:
        if not Path(cfg.weights).is_file():
            raise ConfigError(f"backbone.weights: {cfg.weights}: no such checkpoint file")
        overlay = {"pretrained_cfg_overlay": {"file": str(cfg.weights)}}
    try:
        model = timm.create_model(
            cfg.name,
            pretrained=cfg.pretrained,
            features_only=True,
            output_stride=cfg.output_stride,
            **overlay,
        )
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        if cfg.pretrained and "features" not in str(exc):
            raise WsssError(
                f"backbone.pretrained: could not load ImageNet weights for {cfg.name!r} ({exc}); without hub "
                "access, pre-fill the Hugging Face cache or set backbone.pretrained=false"
            ) from None
        raise ConfigError(
            f"backbone.name: {cfg.name!r} cannot serve as a dilated feature extractor ({exc})"
        ) from None
    except OSError as exc:  # hub unreachable
        raise WsssError(
            f"backbone.pretrained: could not download weights for {cfg.name!r} ({exc}); pre-fill the Hugging "
            "Face cache on this machine or set backbone.pretrained=false"
        ) from None
    if cfg.frozen_bn:
        model = freeze_batch_norm_2d(model)
    return model


def feature_channels(backbone: nn.Module) -> list[int]:
    return list(backbone.feature_info.channels())  # type: ignore[union-attr, operator]


def feature_strides(backbone: nn.Module) -> list[int]:
    return list(backbone.feature_info.reduction())  # type: ignore[union-attr, operator]


class SplitParams(nn.Module):
    """Models with a pretrained-style `backbone` and newly added layers, for psa's four LR groups."""

    backbone: nn.Module

    def backbone_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def new_parameters(self) -> list[torch.nn.Parameter]:
        ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
