"""SEAM (Wang et al., CVPR 2020): self-supervised equivariant attention. Two views of each batch (the
crop and the crop rescaled), CAMs refined by the pixel correlation module (wsss.models.seam), and two
consistency losses between the views: equivariant regularisation (ER) and equivariant cross
regularisation (ECR) with online hard example mining. Losses as in SEAM's `train_SEAM.py`:

    L = (cls_1 + cls_2)/2 + w_minpool (minpool_1 + minpool_2)/2 + w_er ER + w_ecr ECR

Inference reads the refined CAMs' object channels and min-max normalises them (`infer_SEAM.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from wsss.config import BackboneConfig
from wsss.errors import ConfigError
from wsss.methods._equivariance import (
    classification,
    equivariant_regularisation,
    min_max,
    min_pool_loss,
    ohem,
    views,
)
from wsss.methods.base import Batch, SeedMethod
from wsss.models.seam import SeamNet, keep_max_foreground, max_norm, with_background


@dataclass(frozen=True)
class SeamConfig:
    rescale: float = 0.3  # scale of the second view (SEAM 0.3; research brief range [0.3, 0.7])
    ohem: float = 0.2  # ECR keeps this top fraction of |target - refined| entries per image (SEAM 0.2)
    weight_minpool: float = 1.0  # SEAM: 1 (the classification loss is the reference scale)
    weight_er: float = 1.0  # SEAM: 1
    weight_ecr: float = 1.0  # SEAM: 1
    # Which maps inference reads: "refined", the PCM's cam_rv (infer_SEAM.py), or "raw", the
    # classifier's own CAMs of the same network (a diagnostic: what the PCM adds or loses)
    cams: Literal["refined", "raw"] = "refined"

    def validate(self, path: str) -> None:
        if not 0.1 <= self.rescale <= 0.9:
            raise ConfigError(f"{path}.rescale: must be within [0.1, 0.9], got {self.rescale}")
        if not 0 < self.ohem <= 1:
            raise ConfigError(f"{path}.ohem: must be within (0, 1], got {self.ohem}")
        for name in ("weight_minpool", "weight_er", "weight_ecr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}: must be >= 0, got {getattr(self, name)}")


_PARTS = ("cls", "minpool", "er", "ecr")


class Seam(SeedMethod):
    name = "seam"
    description = "SEAM: two-view equivariant CAMs refined by a pixel correlation module (Wang et al. 2020)"
    Config = SeamConfig

    def build(self, backbone: BackboneConfig, num_classes: int, params: SeamConfig) -> SeamNet:
        return SeamNet(backbone, num_classes)

    def loss(self, model: SeamNet, batch: Batch, params: SeamConfig) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch.images, batch.labels
        height, width = images.shape[-2:]
        small = (max(8, round(height * params.rescale)), max(8, round(width * params.rescale)))
        second = F.interpolate(images, small, mode="bilinear", align_corners=True)
        cam1, refined1 = views(model, images)
        cam2, refined2 = views(model, second)
        present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[..., None, None]
        cls = (classification(cam1, labels) + classification(cam2, labels)) / 2
        minpool = (
            min_pool_loss((refined1 * present)[:, 1:]) + min_pool_loss((refined2 * present)[:, 1:])
        ) / 2

        def shrink(t: torch.Tensor) -> torch.Tensor:  # A(.): the first view's maps in the second's frame
            return F.interpolate(t, small, mode="bilinear", align_corners=True)

        norm1, norm_refined1 = shrink(max_norm(cam1)) * present, shrink(max_norm(refined1)) * present
        norm2, norm_refined2 = max_norm(cam2) * present, max_norm(refined2) * present
        er = equivariant_regularisation(norm1, norm2)
        norm1, norm2 = with_background(norm1), with_background(norm2)
        ecr = ohem((keep_max_foreground(norm2.detach()) - norm_refined1).abs(), params.ohem) + ohem(
            (keep_max_foreground(norm1.detach()) - norm_refined2).abs(), params.ohem
        )
        total = cls + params.weight_minpool * minpool + params.weight_er * er + params.weight_ecr * ecr
        parts = {
            name: float(value.detach()) for name, value in zip(_PARTS, (cls, minpool, er, ecr), strict=True)
        }
        return total, parts

    def cams(self, model: SeamNet, x: torch.Tensor, params: SeamConfig) -> torch.Tensor:
        raw, refined = model(x)
        return (refined if params.cams == "refined" else raw)[:, 1:]

    def normalise(self, total: torch.Tensor, params: SeamConfig) -> torch.Tensor:
        return min_max(total)


METHOD = Seam()
