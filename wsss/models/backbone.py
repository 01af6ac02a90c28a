"""timm backbones by name, as multi-level feature extractors with a chosen output stride."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import safetensors.torch
import timm
import torch
from timm.layers import freeze_batch_norm_2d
from timm.utils import freeze
from torch import nn

from wsss.config import BackboneConfig
from wsss.errors import ConfigError, WsssError

log = logging.getLogger(__name__)


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local `.safetensors` or torch checkpoint, never unpickling anything but
    tensors (torch.load with weights_only=True); any other content is a ConfigError naming the file.

    Training checkpoints that wrap the weights (`{"state_dict": ...}`, `{"model": ...}`) are unwrapped.
    """
    where = f"backbone.weights: {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such checkpoint file")
    try:
        if path.suffix == ".safetensors":
            checkpoint: object = safetensors.torch.load_file(str(path), device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted bytes: any failure to parse them is the file's problem
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{where}: not a loadable weights-only checkpoint ({reason[:300]})") from None
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if (
        not isinstance(checkpoint, dict)
        or not checkpoint
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items())
    ):
        raise ConfigError(f"{where}: not a state dict (a mapping of parameter names to tensors)")
    return checkpoint


# The classification head of timm's EfficientNets, which `features_only` models drop.
_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


def create_backbone(cfg: BackboneConfig) -> nn.Module:
    """A timm `features_only` model returning every stage's features, dilated to `output_stride`.

    With `frozen_bn`, BatchNorm layers become fixed affine layers (timm's FrozenBatchNorm2d), as in psa
    and irn, where batches are small and statistics come from ImageNet.
    """
    if cfg.name not in timm.list_models():
        raise ConfigError(f"backbone.name: unknown timm model {cfg.name!r}")
    converted = cfg.local_weights and not cfg.weights
    model = _with_converted_weights(cfg) if converted else _timm_backbone(cfg)
    if cfg.frozen_bn:
        model = freeze_batch_norm_2d(model)
    if cfg.frozen_stages:
        freeze_stages(model, cfg.frozen_stages)
    return model


def _with_converted_weights(cfg: BackboneConfig) -> nn.Module:
    """The feature extractor loaded strictly from weights converted by wsss.models.pretrained: every
    tensor it has must come from the file; the file's extra tensors may only be the classification
    head's (conv_head, bn2, classifier), which a feature extractor drops."""
    model = _timm_backbone(replace(cfg, pretrained=False, local_weights=""))
    state = load_checkpoint(Path(cfg.local_weights))
    extra = {k for k in state if k not in model.state_dict()}
    foreign = sorted(k for k in extra if not k.startswith(_HEAD_PREFIXES))
    if foreign:
        raise WsssError(f"{cfg.local_weights}: tensors {foreign[:3]} fit no layer of {cfg.name!r}")
    model.load_state_dict({k: v for k, v in state.items() if k not in extra}, strict=True)
    return model


def _timm_backbone(cfg: BackboneConfig) -> nn.Module:
    overlay = {"state_dict": load_checkpoint(Path(cfg.weights))} if cfg.weights else None
    try:
        model = timm.create_model(
            cfg.name,
            pretrained=cfg.pretrained,
            features_only=True,
            output_stride=cfg.output_stride,
            pretrained_cfg_overlay=overlay,
        )
    except (RuntimeError, TypeError, ValueError, AssertionError, KeyError) as exc:
        if cfg.weights and "features" not in str(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"backbone.weights: {cfg.weights}: its tensors do not fit {cfg.name!r} ({first[:300]})"
            ) from None
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
    return model


def _modules_through(root: nn.Module, name: str) -> list[str]:
    """Dotted names of the modules that run up to and including `name`, in registration (= forward)
    order for timm's sequential feature extractors: siblings before it, and the path down to it."""
    head, _, rest = name.partition(".")
    out: list[str] = []
    for child_name, child in root.named_children():
        if child_name == head:
            inner = _modules_through(child, rest) if rest else []
            return out + ([f"{head}.{n}" for n in inner] if rest else [head])
        out.append(child_name)
    raise ValueError(f"no module {name!r}")


def freeze_stages(model: nn.Module, count: int) -> None:
    """Freeze the first `count` feature stages (irn's detached conv1..layer2): no gradient, and
    BatchNorm statistics kept (timm's `freeze` turns their BatchNorm into FrozenBatchNorm2d)."""
    info: Any = model.feature_info
    if count > len(info):
        raise ConfigError(
            f"backbone.frozen_stages: {count} exceeds the {len(info)} feature stages of this backbone"
        )
    freeze(model, _modules_through(model, info.module_name(count - 1)))


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
