"""Baseline CAM (Zhou et al. 2016) as trained in psa and irn: multi-label soft-margin loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.methods.base import Batch, NoParams, SeedMethod
from wsss.models.cam import CamNet


class Cam(SeedMethod):
    name = "cam"
    description = "baseline CAM: multi-label soft-margin classification (psa, irn)"

    def loss(self, model: CamNet, batch: Batch, params: NoParams) -> tuple[torch.Tensor, dict[str, float]]:
        # Mean over classes of sigmoid BCE, then over the batch: torch's multilabel_soft_margin_loss.
        return F.multilabel_soft_margin_loss(model(batch.images), batch.labels), {}


METHOD = Cam()
