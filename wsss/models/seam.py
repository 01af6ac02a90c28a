"""SEAM's network (Wang et al., CVPR 2020): a CAM net with a background channel and the pixel
correlation module (PCM) that refines CAMs with the network's own feature affinities.

PCM, as in SEAM's `network/resnet38_SEAM.py`:
- f = [image resized to the feature grid (3 ch); ReLU(1x1 conv -> 64) on the detached stride-8
  features; ReLU(1x1 conv -> 128) on the detached features of the next stage] (195 channels);
- e = L2-normalised 1x1 conv 195 -> 192 of f; A = ReLU(e^T e) (HW x HW), each column summed to 1;
- y_d: ReLU(CAM) divided by each channel's max (no min subtraction), background = 1 - max
  foreground, foreground channels other than the per-pixel maximum zeroed, all without gradient;
- refined CAM = y_d A.
SEAM taps ResNet-38's conv4 and conv5; with timm's feature stages these are the two stages before the
last (layer2 and layer3 of a ResNet), resized to the last stage's grid where the strides differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import BackboneConfig
from wsss.errors import ConfigError
from wsss.models.backbone import SplitParams, create_backbone, feature_channels


def max_norm(p: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """SEAM's `max_norm`: per (image, channel) ReLU(p - min - eps) / (max - min + eps) of ReLU(p)."""
    p = F.relu(p)
    flat = p.flatten(2)
    low, high = flat.amin(-1)[..., None, None], flat.amax(-1)[..., None, None]
    return F.relu(p - low - eps) / (high - low + eps)


def seed_norm(cam: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The PCM's seed normalisation (SEAM and CPN): ReLU(ReLU(cam) - eps) / (max ReLU(cam) + eps)."""
    cam = F.relu(cam)
    return F.relu(cam - eps) / (cam.flatten(2).amax(-1)[..., None, None] + eps)


def with_background(cams: torch.Tensor) -> torch.Tensor:
    """Channel 0 set to 1 - max over the foreground channels (SEAM's background for its losses)."""
    return torch.cat([1 - cams[:, 1:].amax(1, keepdim=True), cams[:, 1:]], dim=1)


def keep_max_foreground(cams: torch.Tensor) -> torch.Tensor:
    """SEAM's `max_onehot`: foreground channels other than the per-pixel maximum set to 0."""
    fg = cams[:, 1:]
    kept = torch.where(fg == fg.amax(1, keepdim=True), fg, torch.zeros_like(fg))
    return torch.cat([cams[:, :1], kept], dim=1)


def pcm_affinity(embedding: torch.Tensor) -> torch.Tensor:
    """(B, HW, HW) column-stochastic affinity from (B, C, H, W) features: ReLU of cosine similarity,
    each column divided by its sum (+1e-5), as SEAM's PCM."""
    e = embedding.flatten(2)
    e = e / (e.norm(dim=1, keepdim=True) + 1e-5)
    affinity = F.relu(e.transpose(1, 2) @ e)
    return affinity / (affinity.sum(dim=1, keepdim=True) + 1e-5)


class SeamNet(SplitParams):
    """Backbone -> 1x1 bias-free classifier over 1 + K channels (background first) and the PCM."""

    def __init__(self, cfg: BackboneConfig, num_classes: int) -> None:
        super().__init__()
        self.backbone = create_backbone(cfg)
        channels = feature_channels(self.backbone)
        if len(channels) < 3:
            raise ConfigError(
                f"seed.backbone.name: SEAM's PCM taps two stages before the last; {cfg.name!r} has "
                f"{len(channels)} feature stages"
            )
        self.classifier = nn.Conv2d(channels[-1], num_classes + 1, 1, bias=False)
        nn.init.xavier_uniform_(self.classifier.weight)
        self.dropout = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.mid = nn.Conv2d(channels[-3], 64, 1, bias=False)
        self.high = nn.Conv2d(channels[-2], 128, 1, bias=False)
        self.embed = nn.Conv2d(195, 192, 1, bias=False)
        for conv in (self.mid, self.high):
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.embed.weight, gain=4)  # SEAM's f9 init

    def pcm_features(self, x: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[-1].shape[-2:]

        def at_grid(t: torch.Tensor) -> torch.Tensor:
            return t if t.shape[-2:] == size else F.interpolate(t, size, mode="bilinear", align_corners=True)

        image = F.interpolate(x, size, mode="bilinear", align_corners=True)
        mid = F.relu(self.mid(at_grid(feats[-3].detach())))
        high = F.relu(self.high(at_grid(feats[-2].detach())))
        return torch.cat([image, mid, high], dim=1)

    def refine(self, features: torch.Tensor, embedding: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """PCM: the seeds propagated by the features' affinities, y_d A."""
        return (seeds.flatten(2) @ pcm_affinity(embedding)).view_as(seeds)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw CAMs, refined CAMs), both (B, 1 + K, h, w) on the feature grid."""
        feats = self.backbone(x)
        cam = self.classifier(self.dropout(feats[-1]))
        with torch.no_grad():
            seeds = keep_max_foreground(with_background(seed_norm(cam.detach())))
        features = self.pcm_features(x, feats)
        return cam, self.refine(features, self.embed(features), seeds)

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Object-class refined CAMs (SEAM's inference reads cam_rv's foreground channels)."""
        return self(x)[1][:, 1:]
