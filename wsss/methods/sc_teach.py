"""Sub-category teaching (mva-wsss): fine-tune a ViT teacher on the image labels, cluster each parent
class's images by the teacher's pooled embeddings with FINCH (Sarfraz et al. 2019, parameter-free: it
returns a hierarchy of partitions), and train the CAM net on parent + weight x cluster labels. The
number of cluster outputs comes from the clustering.

Departures and options:
- The reference clusters train and val images together, a leak of val images into training; here
  only train images are clustered unless `cluster_val` reproduces the reference.
- The reference takes FINCH's last (coarsest) partition; `partition` also offers the first, the
  middle one, or per class the level whose cluster count is nearest `clusters`.
- Reference teacher: `vit_base_patch16_224` with ImageNet weights (the voc12 preset). On the synthetic
  benchmark, which has no pretrained weights here, a 4-block `vit_tiny` trained from scratch; on real
  photos without a hub (the msrc preset), ImageNet EfficientNet-Lite0 from its offline package, with
  frozen BatchNorm.
- The student loss is the reference's: hard cluster labels (its "knowledge distillation" flag), weight 2.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch.nn.functional as F

from wsss.checkpoints import save_state
from wsss.data.classes import mask_labels
from wsss.errors import ConfigError, WsssError
from wsss.methods._subcat import (
    Assignments,
    SubCategoryMethod,
    SubInit,
    image_labels,
    targets_from_assignments,
)
from wsss.methods.base import RoundInputs, RoundTargets
from wsss.models.backbone import SplitParams
from wsss.models.pretrained import convert, installed_source
from wsss.models.teacher import LITE_TEACHERS, Teacher, check_teacher

log = logging.getLogger(__name__)
_TEACHER_KNOBS = (
    "teacher",
    "teacher_pretrained",
    "teacher_size",
    "teacher_depth",
    "teacher_epochs",
    "teacher_lr",
)


@dataclass(frozen=True)
class ScTeachConfig:
    # a timm ViT (mva-wsss: vit_base_patch16_224, ImageNet weights) or an offline-weights Lite model
    teacher: str = "vit_tiny_patch16_224"
    teacher_pretrained: bool = False
    teacher_size: int = 128  # the teacher's square input (mva-wsss: 224)
    teacher_depth: int = 4  # transformer blocks; 0 = the model's own
    teacher_epochs: int = 16
    teacher_lr: float = 0.05  # SGD (mva-wsss: 0.1, momentum 0.9), the head at 10x as in every seed net
    partition: Literal["last", "first", "middle", "nearest"] = "last"  # FINCH level (mva-wsss: last)
    clusters: int = 3  # with partition "nearest": the wanted sub-categories per class
    weight: float = 2.0  # the cluster loss's weight (mva-wsss: 2)
    sub_init: SubInit = "xavier"  # the sub-category head's start (both references: xavier); see _subcat
    cluster_val: bool = False  # also cluster val images, as the reference does (a leak of val images)

    def validate(self, path: str) -> None:
        check_teacher(self.teacher, self.teacher_depth, path)
        if self.teacher_pretrained and self.teacher in LITE_TEACHERS:  # missing weights stop it here
            installed_source(self.teacher, f"{path}.teacher_pretrained")
        if not 32 <= self.teacher_size <= 1024 or self.teacher_size % 16:
            raise ConfigError(
                f"{path}.teacher_size: must be a multiple of 16 within 32..1024, got {self.teacher_size}"
            )
        if not 0 <= self.teacher_depth <= 48:
            raise ConfigError(
                f"{path}.teacher_depth: must be within 0..48 (0 = the model's), got {self.teacher_depth}"
            )
        if not 1 <= self.teacher_epochs <= 10_000:
            raise ConfigError(f"{path}.teacher_epochs: must be within 1..10000, got {self.teacher_epochs}")
        if not 0 < self.teacher_lr < 10:
            raise ConfigError(f"{path}.teacher_lr: must be within (0, 10), got {self.teacher_lr}")
        if not 1 <= self.clusters <= 100:
            raise ConfigError(f"{path}.clusters: must be within 1..100, got {self.clusters}")
        if self.weight < 0:
            raise ConfigError(f"{path}.weight: must be >= 0, got {self.weight}")


def _finch() -> Any:
    try:
        with warnings.catch_warnings():  # finch warns that the optional pynndescent is missing
            warnings.simplefilter("ignore")
            from finch import FINCH
    except ImportError:
        raise WsssError("seed.method sc_teach: FINCH is missing; pip install finch-clust") from None
    return FINCH


def pick_partition(levels: np.ndarray, counts: list[int], partition: str, clusters: int) -> np.ndarray:
    """One column of FINCH's (n, levels) partitions."""
    if partition == "first":
        return levels[:, 0]
    if partition == "middle":
        return levels[:, len(counts) // 2]
    if partition == "nearest":
        return levels[:, int(np.argmin([abs(c - clusters) for c in counts]))]
    return levels[:, -1]


def finch_per_class(
    features: np.ndarray, ids: list[str], labels: np.ndarray, params: ScTeachConfig, seed: int
) -> tuple[Assignments, dict[str, list[int]]]:
    """Each class's images partitioned by FINCH (cosine distance); returns the assignments and, per
    class, the cluster count of every FINCH level."""
    finch = _finch()
    out: Assignments = {}
    levels: dict[str, list[int]] = {}
    for cls in range(labels.shape[1]):
        rows = np.flatnonzero(labels[:, cls] > 0)
        if rows.size == 0:
            continue
        if rows.size <= 2:  # FINCH needs first neighbours to link; two images are one group
            found, counts = np.zeros(rows.size, int), [1]
        else:
            partitions, counts_array, _ = finch(
                features[rows], distance="cosine", verbose=False, random_state=seed
            )
            counts = [int(c) for c in counts_array]
            found = pick_partition(partitions, counts, params.partition, params.clusters)
        order = {c: i for i, c in enumerate(dict.fromkeys(found.tolist()))}
        out[cls] = {ids[r]: order[c] for r, c in zip(rows.tolist(), found.tolist(), strict=True)}
        levels[str(cls)] = counts
    return out, levels


class ScTeach(SubCategoryMethod):
    name = "sc_teach"
    description = (
        "sub-category teaching: FINCH clusters of a ViT teacher's embeddings as extra labels (mva-wsss)"
    )
    Config = ScTeachConfig

    def round_knobs(
        self, params: ScTeachConfig, round_index: int
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        knobs = asdict(params)
        return {k: knobs[k] for k in (*_TEACHER_KNOBS, "partition", "clusters", "cluster_val")}, knobs

    def train_teacher(self, context: RoundInputs, params: ScTeachConfig) -> Teacher:
        seed_train = context.cfg.train
        scale = params.teacher_size / seed_train.crop_size
        train = dataclasses.replace(
            seed_train,
            crop_size=params.teacher_size,
            resize_long=(round(seed_train.resize_long[0] * scale), round(seed_train.resize_long[1] * scale)),
            epochs=params.teacher_epochs,
            lr=params.teacher_lr,
        )
        classes = context.data.num_classes - 1
        state = None
        if params.teacher_pretrained and params.teacher in LITE_TEACHERS:  # 0.2 s, no cache needed
            state = convert(params.teacher, installed_source(params.teacher))
        teacher, stats = context.train(
            lambda: Teacher(
                params.teacher,
                classes,
                params.teacher_size,
                params.teacher_depth,
                params.teacher_pretrained,
                state,
            ),
            lambda m, batch: (F.multilabel_soft_margin_loss(m(batch[0]), batch[1]), {}),
            train,
            "teacher",
        )
        save_state(teacher.state_dict(), context.folder / "teacher.pt")
        log.info(
            "sc_teach: teacher trained in %.1f s, final loss %.4f", stats.seconds, stats.epoch_losses[-1]
        )
        return teacher  # type: ignore[return-value]

    def targets(
        self, round_index: int, previous: SplitParams | None, context: RoundInputs, params: ScTeachConfig
    ) -> RoundTargets:
        teacher = self.train_teacher(context, params).to(context.runtime.device).eval()
        ids = list(context.ids)
        labels = image_labels(ids, context.data.labels)
        if params.cluster_val:  # val images' labels from their masks (label files cover train only)
            val, classes = list(context.data.val_ids), context.data.num_classes - 1
            ids += val
            labels = np.concatenate(
                [labels, np.stack([mask_labels(context.data.read_mask(i), classes) for i in val])]
            )
        features = context.features(teacher.embed, tuple(ids), size=params.teacher_size)
        np.save(context.folder / "features.npy", features.astype(np.float16), allow_pickle=False)
        found, levels = finch_per_class(features, ids, labels, params, context.rng_seed)
        train_labels = labels[: len(context.ids)]
        targets = targets_from_assignments(context.ids, train_labels, found, {"finch_levels": levels})
        log.info("sc_teach: %d clusters", targets.outputs)
        return targets

    def sub_weight(self, params: ScTeachConfig) -> float:
        return params.weight


METHOD = ScTeach()
