"""Mixup-CAM (Chang et al., BMVC 2020): input mixup with a mixed label loss, plus entropy and
concentration regularisers that push CAMs to cover objects more fully."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wsss.methods._mixing import LAMBDA_CON, LAMBDA_ENT, beta, check_mixing, mixing_loss
from wsss.methods.base import Batch, SeedMethod
from wsss.models.cam import CamNet


@dataclass(frozen=True)
class MixupConfig:
    alpha: float = 0.2  # lambda ~ Beta(alpha, alpha) (mva-wsss)
    lambda_ent: float = LAMBDA_ENT
    lambda_con: float = LAMBDA_CON

    def validate(self, path: str) -> None:
        check_mixing(self.alpha, self.lambda_ent, self.lambda_con, path)


class Mixup(SeedMethod):
    name = "mixup"
    description = "Mixup-CAM: input mixup + entropy and concentration regularisers (Chang et al. 2020)"
    Config = MixupConfig

    def loss(self, model: CamNet, batch: Batch, params: MixupConfig) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch.images, batch.labels
        lam = beta(params.alpha)  # one lambda per batch, partners from a random permutation
        perm = torch.randperm(images.shape[0], device=images.device)
        logits, maps = model.logits_and_cams(lam * images + (1 - lam) * images[perm])
        return mixing_loss(logits, maps, labels, perm, lam, params.lambda_ent, params.lambda_con)


METHOD = Mixup()
