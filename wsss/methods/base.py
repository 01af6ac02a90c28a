"""The seed-method contract: a method contributes its own config and its loss to the shared training
loop, never a copy of the loop, and may bring its own network and CAM read-out. A new method is one
module in wsss/methods plus one search_spaces/<name>.yaml; tests/wsss/methods/test_contract.py runs
every method through the contract.

What stays shared whatever the method: the training loop (optimiser, LR groups, schedule, AMP), the
stage store, multi-scale + flip inference (wsss.ops.cam.multiscale_cams calls `cams` at each scale and
`normalise` once on the sum) and evaluation.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from wsss.config import BackboneConfig, TrainConfig
from wsss.data.image_maps import ImageMaps
from wsss.models.backbone import SplitParams
from wsss.models.cam import CamNet
from wsss.ops.cam import max_normalise


@dataclass(frozen=True)
class NoParams:
    """The config of a method without knobs of its own."""


class SeedMethod(abc.ABC):
    """How a CAM network is built, trained and read out."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type] = NoParams  # a frozen dataclass: the method's own knobs, as `seed.params`

    @abc.abstractmethod
    def loss(
        self, model: CamNet, images: torch.Tensor, labels: torch.Tensor, params: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss for one batch and named parts to show on the progress bar. A method with
        `image_maps` gets the batch's maps as one more argument after `params`.

        Randomness (mixing coefficients, permutations, masks) must come from torch's generator, which
        the shared loop seeds, so that a run is reproducible.
        """

    def check(self, params: Any, model: CamNet) -> None:  # noqa: B027 - an optional hook
        """Raise ConfigError naming `seed.params.<key>` if `params` cannot work with `model`."""

    def build(self, backbone: BackboneConfig, num_classes: int, params: Any) -> SplitParams:
        """The network this method trains: by default the plain CAM net (backbone + 1x1 classifier).
        A method with parts of its own (SEAM's PCM, a background channel) returns its own SplitParams
        module, whose `backbone` gets the backbone LR groups and everything else the new-layer ones."""
        return CamNet(backbone, num_classes)

    def cams(self, model: Any, x: torch.Tensor, params: Any) -> torch.Tensor:
        """(B, num_classes, h, w) non-negative class maps of the object classes for a batch, at any
        resolution (inference upsamples them): the maps the method reads its CAMs from."""
        return model.cams(x)

    def normalise(self, total: torch.Tensor, params: Any) -> torch.Tensor:
        """(P, H, W) maps summed over scales and flips -> CAMs in [0, 1]. psa / irn: each class divided
        by its max (+1e-5), no min subtraction."""
        return max_normalise(total)

    def image_maps(self, params: Any, train: TrainConfig) -> ImageMaps | None:
        """Per-image maps the loss needs beside each image (CPN's superpixels), or None. They are
        computed once per image and setting, cached with the dataset, augmented with the image like
        a mask and passed to `loss` as a (B, H, W) long tensor."""
        return None
