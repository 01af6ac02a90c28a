"""Manifold-Mixup-CAM (mva-wsss; Manifold Mixup = Verma et al. 2019): mix hidden states after a backbone
stage drawn at each step from a configured set (stage 0 = the input image), then finish the forward
pass; Mixup-CAM's loss and regularisers on the result."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wsss.errors import ConfigError
from wsss.methods._mixing import LAMBDA_CON, LAMBDA_ENT, beta, check_mixing, mixing_loss
from wsss.methods.base import Batch, SeedMethod
from wsss.models.cam import CamNet


@dataclass(frozen=True)
class ManifoldMixupConfig:
    alpha: float = 0.2  # lambda ~ Beta(alpha, alpha) (mva-wsss; the Manifold Mixup paper used 2.0)
    layers: tuple[int, ...] = (0, 1, 2, 3, 4)  # stages to mix after, drawn uniformly; 0 = the input
    lambda_ent: float = LAMBDA_ENT
    lambda_con: float = LAMBDA_CON

    def validate(self, path: str) -> None:
        check_mixing(self.alpha, self.lambda_ent, self.lambda_con, path)
        if not self.layers or min(self.layers) < 0 or len(set(self.layers)) != len(self.layers):
            raise ConfigError(f"{path}.layers: need distinct stage numbers >= 0, got {list(self.layers)}")


class ManifoldMixup(SeedMethod):
    name = "manifold_mixup"
    description = "Manifold-Mixup-CAM: mixing hidden states at a random backbone stage (mva-wsss)"
    Config = ManifoldMixupConfig

    def check(self, params: ManifoldMixupConfig, model: CamNet) -> None:
        stages = model.stage_names
        deepest = len(stages) if stages is not None else 0
        if max(params.layers) > deepest:
            raise ConfigError(
                f"seed.params.layers: {list(params.layers)} reaches past this backbone's stages 0..{deepest}"
                + ("" if stages is not None else " (it has no feature stages; only 0, the input, works)")
            )

    def loss(
        self, model: CamNet, batch: Batch, params: ManifoldMixupConfig
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch.images, batch.labels
        stage = params.layers[int(torch.randint(len(params.layers), ()).item())]
        lam = beta(params.alpha)
        perm = torch.randperm(images.shape[0], device=images.device)
        logits, maps = model.logits_and_cams_mixed(images, stage, lambda h: lam * h + (1 - lam) * h[perm])
        total, parts = mixing_loss(logits, maps, labels, perm, lam, params.lambda_ent, params.lambda_con)
        return total, {**parts, "stage": float(stage)}


METHOD = ManifoldMixup()
