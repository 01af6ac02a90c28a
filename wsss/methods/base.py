"""The seed-method contract: a method contributes its own config and its loss to the shared training
loop, never a copy of the loop, and may bring its own network and CAM read-out. A new method is one
module in wsss/methods plus one search_spaces/<name>.yaml; tests/wsss/methods/test_contract.py runs
every method through the contract.

Methods that train in rounds (SC-CAM's exploration rounds, a teacher before the student) say how many
(`rounds`) and what each round learns beside the image labels (`targets`, e.g. sub-category labels
from clustering the previous round's features); wsss.stages.rounds runs the rounds through the same
loop and caches each one, so a change that only touches a later round reuses the earlier ones.

What stays shared whatever the method: the training loop (optimiser, LR groups, schedule, AMP), the
stage store, multi-scale + flip inference (wsss.ops.cam.multiscale_cams calls `cams` at each scale and
`normalise` once on the sum) and evaluation.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch

from wsss.config import BackboneConfig, TrainConfig
from wsss.data.image_maps import ImageMaps
from wsss.models.backbone import SplitParams
from wsss.models.cam import CamNet
from wsss.ops.cam import max_normalise

if TYPE_CHECKING:  # annotations only: the methods sit below the data reader and the training loop
    from wsss.config import SeedConfig
    from wsss.data.synth_variants import SynthObject
    from wsss.data.voc import VocDataset
    from wsss.loop import TrainStats
    from wsss.runtime import Runtime


class RoundInputs(Protocol):
    """What a round's `targets` may use; wsss.stages.rounds.RoundContext provides it, so no method
    imports the stage layer. `folder` is where the round writes files to keep (features, assignments,
    a teacher's weights); `variants` is the synthetic benchmark's truth, None on real data."""

    @property
    def cfg(self) -> SeedConfig: ...
    @property
    def data(self) -> VocDataset: ...
    @property
    def runtime(self) -> Runtime: ...
    @property
    def rng_seed(self) -> int: ...
    @property
    def folder(self) -> Path: ...
    @property
    def variants(self) -> dict[str, list[SynthObject]] | None: ...
    @property
    def ids(self) -> tuple[str, ...]: ...

    def features(
        self, embed: Callable[[torch.Tensor], torch.Tensor], ids: tuple[str, ...] | None = None, size: int = 0
    ) -> np.ndarray:
        """(N, D) float32 `embed` outputs of `ids` (default the train ids), one image at a time."""
        ...

    def train(
        self,
        build: Callable[[], SplitParams],
        loss: Callable[[Any, tuple[torch.Tensor, ...]], tuple[torch.Tensor, dict[str, float]]],
        train: TrainConfig,
        desc: str,
    ) -> tuple[SplitParams, TrainStats]:
        """Train a network on the train images and labels through the shared loop."""
        ...


@dataclass(frozen=True)
class Batch:
    """One training batch as a method's `loss` receives it: (B, 3, H, W) images, (B, K) multi-hot image
    labels, and what the method asked for besides: `maps`, its `image_maps` cropped with the images
    ((B, H, W) long, e.g. CPN's superpixels), and `targets`, the round's `targets` rows ((B, D))."""

    images: torch.Tensor
    labels: torch.Tensor
    maps: torch.Tensor | None = None
    targets: torch.Tensor | None = None


@dataclass(frozen=True)
class NoParams:
    """The config of a method without knobs of its own."""


@dataclass(frozen=True)
class RoundTargets:
    """What one training round learns beside the image labels.

    `targets` (N, D) float32 rows follow the train ids and reach `loss` as a (B, D) tensor after the
    image maps; `outputs` = D sizes the network's extra head. `record` (JSON-able) and the files the
    method wrote into the round's folder are kept in the seed artifact.
    """

    targets: np.ndarray
    record: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outputs(self) -> int:
        return int(self.targets.shape[1])


class SeedMethod(abc.ABC):
    """How a CAM network is built, trained and read out."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type] = NoParams  # a frozen dataclass: the method's own knobs, as `seed.params`
    # True for a method whose `targets` gives a round something to learn besides the image labels
    # (SC-CAM's sub-categories, a teacher's clusters): it then trains through wsss.stages.rounds.
    learns_targets: ClassVar[bool] = False

    @abc.abstractmethod
    def loss(self, model: Any, batch: Batch, params: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss for one batch and named parts to show on the progress bar.

        Randomness (mixing coefficients, permutations, masks) must come from torch's generator, which
        the shared loop seeds, so that a run is reproducible.
        """

    def check(self, params: Any, model: Any) -> None:  # noqa: B027 - an optional hook
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

    def rounds(self, params: Any) -> int:
        """How many networks are trained one after the other; the last one gives the CAMs."""
        return 1

    def round_knobs(self, params: Any, round_index: int) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """The knobs of `params` that round `round_index`'s targets and its training depend on: keys of
        the round caches, so that changing a knob only recomputes the rounds that use it."""
        return {}, {"params": repr(params)}

    def targets(
        self, round_index: int, previous: SplitParams | None, context: RoundInputs, params: Any
    ) -> RoundTargets | None:
        """What round `round_index` learns beside the image labels, from the previous round's trained
        network (None before the first); None = the image labels only."""
        return None

    def build_round(
        self,
        backbone: BackboneConfig,
        num_classes: int,
        params: Any,
        targets: RoundTargets | None,
        previous: SplitParams | None,
    ) -> SplitParams:
        """The network of a round with `targets`, which may start from the `previous` round's weights
        (None when it does not exist or the weights are loaded afterwards). By default `build`."""
        return self.build(backbone, num_classes, params)

    def image_maps(self, params: Any, train: TrainConfig, stride: int) -> ImageMaps | None:
        """Per-image maps the loss needs beside each image (CPN's superpixels), or None. They are
        computed once per image and setting, cached with the dataset, augmented with the image like
        a mask and passed to `loss` as a (B, H, W) long tensor."""
        return None
