"""What SC-CAM and sub-category teaching share: the CAM net with a second head over sub-categories,
the parent + weight x sub-category loss, and turning per-class cluster assignments into targets.

Sub-category targets (SC-CAM's create_pseudo_label.py): classes' clusters laid end to end, class c
owning columns [offset_c, offset_c + clusters_c); an image is 1 in the column of its cluster under
every class it contains, so a multi-label image has one 1 per parent.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss.config import BackboneConfig
from wsss.methods.base import Batch, RoundTargets, SeedMethod
from wsss.models.backbone import SplitParams
from wsss.models.cam import CamNet

Assignments = dict[int, dict[str, int]]  # class index -> image id -> cluster within the class
SubInit = Literal["xavier", "zero"]


class SubCategoryNet(CamNet):
    """CamNet plus a bias-free 1x1 sub-category head on the same pooled features (SC-CAM's fc8_200);
    no head when `sub_outputs` is 0 (a round without targets).

    `sub_init` "xavier" is the reference's (fc8_200 like fc8). "zero" starts every sub-category logit
    at 0: the head's gradient into the backbone is then 0 at the first step and grows only as the
    head learns. On ImageNet Lite0 a xavier head starts at BCE ~1.9 (its pooled ReLU6 features are
    large) and its gradient at weight 2 wrecks the pretrained features in the first epoch
    (docs/benchmarks.md, sub-category rows)."""

    def __init__(
        self, cfg: BackboneConfig, num_classes: int, sub_outputs: int, sub_init: SubInit = "xavier"
    ) -> None:
        super().__init__(cfg, num_classes)
        self.sub_classifier: nn.Conv2d | None = None
        if sub_outputs:
            channels = self.classifier.in_channels
            self.sub_classifier = nn.Conv2d(channels, sub_outputs, 1, bias=False)
            if sub_init == "zero":
                nn.init.zeros_(self.sub_classifier.weight)
            else:
                nn.init.xavier_uniform_(self.sub_classifier.weight)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """GAP of the last feature map (SC-CAM's 4,096-d conv6 feature); call in eval mode."""
        return F.adaptive_avg_pool2d(self.features(x), 1)

    def both_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        pooled = F.adaptive_avg_pool2d(self.features(x), 1)
        sub = self.sub_classifier(pooled).flatten(1) if self.sub_classifier is not None else None
        return self.classifier(pooled).flatten(1), sub

    def warm_from(self, previous: nn.Module) -> None:
        """Start from `previous`'s backbone and parent classifier, never its sub-category head: that
        head's columns are clusters of the previous round's partition, which this round's targets
        renumber (k-means gives K per class every round, so the shapes would agree regardless)."""
        own = self.state_dict()
        same = {
            k: v
            for k, v in previous.state_dict().items()
            if k in own and own[k].shape == v.shape and not k.startswith("sub_classifier.")
        }
        self.load_state_dict(same, strict=False)


def subcategory_loss(
    model: SubCategoryNet, images: torch.Tensor, labels: torch.Tensor, sub: torch.Tensor | None, weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE(parent) + weight x BCE(sub-categories), both torch's multi-label soft margin (SC-CAM's
    train_cls.py: loss + 5 * loss_200; mva-wsss's student: loss + 2 * loss_kd)."""
    parent, sub_logits = model.both_logits(images)
    loss = F.multilabel_soft_margin_loss(parent, labels)
    if sub is None or sub_logits is None:
        return loss, {}
    sub_loss = F.multilabel_soft_margin_loss(sub_logits, sub)
    return loss + weight * sub_loss, {"sub": float(sub_loss.detach())}


class SubCategoryMethod(SeedMethod):
    """What SC-CAM and sub-category teaching share as seed methods: the CAM net with a sub-category
    head sized by the round's targets, and parent + weight x sub-category loss. A subclass says how
    heavy the sub-category loss is and whether a round starts from the previous round's weights."""

    learns_targets = True

    @abc.abstractmethod
    def sub_weight(self, params: Any) -> float:
        """The sub-category loss's weight (SC-CAM's lambda_sub, mva-wsss's 2)."""

    def sub_init(self, params: Any) -> SubInit:
        """How the sub-category head starts ("xavier": both references); both configs name it `sub_init`."""
        init: SubInit = params.sub_init
        return init

    def warm_start(self, params: Any) -> bool:
        return False  # every round from the initial weights, as both references do

    def build(self, backbone: BackboneConfig, num_classes: int, params: Any) -> SubCategoryNet:
        return SubCategoryNet(backbone, num_classes, 0)

    def build_round(
        self,
        backbone: BackboneConfig,
        num_classes: int,
        params: Any,
        targets: RoundTargets | None,
        previous: SplitParams | None,
    ) -> SubCategoryNet:
        outputs = targets.outputs if targets is not None else 0
        model = SubCategoryNet(backbone, num_classes, outputs, self.sub_init(params))
        if previous is not None and self.warm_start(params):
            model.warm_from(previous)
        return model

    def loss(self, model: SubCategoryNet, batch: Batch, params: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return subcategory_loss(model, batch.images, batch.labels, batch.targets, self.sub_weight(params))


def images_of_class(ids: Sequence[str], labels: np.ndarray, cls: int) -> list[int]:
    """Rows of `ids` whose image contains class `cls` (multi-label images appear under every parent)."""
    return [i for i in range(len(ids)) if labels[i, cls] > 0]


def targets_from_assignments(
    ids: Sequence[str],
    labels: np.ndarray,
    assignments: Assignments,
    record: Mapping[str, Any],
) -> RoundTargets:
    """(N, sum of clusters) multi-hot targets, and a record with the assignments and the cluster count
    per class (the seed stage scores the assignments against the synthetic benchmark's truth)."""
    counts = {c: (max(found.values()) + 1 if found else 0) for c, found in assignments.items()}
    offsets = np.cumsum([0] + [counts[c] for c in sorted(counts)])
    offset = dict(zip(sorted(counts), offsets[:-1].tolist(), strict=True))
    row = {image_id: i for i, image_id in enumerate(ids)}
    targets = np.zeros((len(ids), int(offsets[-1])), np.float32)
    for cls, found in assignments.items():
        for image_id, cluster in found.items():
            if image_id in row and labels[row[image_id], cls] > 0:  # val images clustered alongside
                targets[row[image_id], offset[cls] + cluster] = 1.0
    full = {
        **record,
        "clusters": int(offsets[-1]),
        "clusters_per_class": {str(c): int(n) for c, n in sorted(counts.items())},
        "assignments": {str(c): dict(sorted(found.items())) for c, found in sorted(assignments.items())},
    }
    return RoundTargets(targets, full)


def image_labels(ids: Sequence[str], read: Any) -> np.ndarray:
    """(N, classes) multi-hot labels of `ids` through `read(image_id)`."""
    return np.stack([read(i) for i in ids]).astype(np.float32)
