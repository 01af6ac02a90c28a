"""The seed-method contract: a method contributes its loss to the shared training loop, nothing else."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from wsss.models.cam import CamNet


class SeedMethod(abc.ABC):
    """How a CAM classifier is trained. Inference (multi-scale CAMs) is shared by every method."""

    name: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def loss(
        self, model: CamNet, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss for one batch and named parts to show on the progress bar."""
