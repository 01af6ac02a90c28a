"""The seed-method contract: a method contributes its own config and its loss to the shared training
loop, never a copy of the loop. A new method is one module in wsss/methods plus one
search_spaces/<name>.yaml; tests/wsss/methods/test_contract.py runs every method through the contract."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from wsss.models.cam import CamNet


@dataclass(frozen=True)
class NoParams:
    """The config of a method without knobs of its own."""


class SeedMethod(abc.ABC):
    """How a CAM classifier is trained. Inference (multi-scale CAMs) is shared by every method."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type] = NoParams  # a frozen dataclass: the method's own knobs, as `seed.params`

    @abc.abstractmethod
    def loss(
        self, model: CamNet, images: torch.Tensor, labels: torch.Tensor, params: Any
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss for one batch and named parts to show on the progress bar.

        Randomness (mixing coefficients, permutations, masks) must come from torch's generator, which
        the shared loop seeds, so that a run is reproducible.
        """

    def check(self, params: Any, model: CamNet) -> None:  # noqa: B027 - an optional hook
        """Raise ConfigError naming `seed.params.<key>` if `params` cannot work with `model`."""
