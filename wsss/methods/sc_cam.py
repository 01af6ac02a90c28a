"""SC-CAM (Chang et al., CVPR 2020): sub-category exploration. Round 0 trains the plain CAM classifier
(the reference starts from psa's); each later round extracts every train image's pooled feature with
the previous round's network (eval mode, scale 1, no flip), clusters each parent class's images into
K sub-categories with k-means, and trains the classifier again with a parent head and a sub-category
head: L = BCE(parent) + lambda_sub BCE(sub). The reference restarts each round from the initial
(ImageNet) weights; `restart: false` continues from the previous round instead. CAMs come from the
parent head of the last round.

Reference defaults (SC-CAM script.sh / the paper): K = 10, lambda_sub = 5, 3 rounds. Each round here
uses the seed schedule (`seed.train`); the reference trains 61 epochs and takes the ep30/40/50
checkpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from sklearn.cluster import KMeans

from wsss.data.synth_variants import VARIANTS_FILE, SynthObject, image_variant
from wsss.errors import ConfigError
from wsss.methods._subcat import (
    Assignments,
    SubCategoryMethod,
    SubCategoryNet,
    SubInit,
    image_labels,
    images_of_class,
    targets_from_assignments,
)
from wsss.methods.base import RoundInputs, RoundTargets
from wsss.models.backbone import SplitParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScCamConfig:
    rounds: int = 3  # exploration rounds after the plain classifier (SC-CAM: 3)
    clusters: int = 10  # K: sub-categories per parent class (SC-CAM: 10; paper tried 5 / 10 / 20)
    lambda_sub: float = 5.0  # weight of the sub-category loss (SC-CAM: 5)
    sub_init: SubInit = "xavier"  # the sub-category head's start (both references: xavier); see _subcat
    restart: bool = True  # each round from the initial weights (SC-CAM) or from the previous round
    kmeans_init: int = 10  # k-means restarts (sklearn's n_init; the reference's sklearn default was 10)
    # "oracle": a control, not SC-CAM: the synthetic benchmark's hidden coats (variants.json) as the
    # sub-categories, which says whether coat sub-categories help the CAMs at all (methods-review 9)
    sub_labels: Literal["kmeans", "oracle"] = "kmeans"

    def validate(self, path: str) -> None:
        if not 1 <= self.rounds <= 10:
            raise ConfigError(f"{path}.rounds: must be within 1..10, got {self.rounds}")
        if not 2 <= self.clusters <= 100:
            raise ConfigError(f"{path}.clusters: K must be within 2..100, got {self.clusters}")
        if self.lambda_sub < 0:
            raise ConfigError(f"{path}.lambda_sub: must be >= 0, got {self.lambda_sub}")
        if not 1 <= self.kmeans_init <= 100:
            raise ConfigError(f"{path}.kmeans_init: must be within 1..100, got {self.kmeans_init}")


def kmeans_per_class(
    features: np.ndarray, ids: tuple[str, ...], labels: np.ndarray, clusters: int, seed: int, restarts: int
) -> Assignments:
    """Each parent class's images clustered into min(K, its image count) groups (sklearn KMeans with
    the pipeline's seed as random_state, so a rerun gives the same assignments)."""
    out: Assignments = {}
    for cls in range(labels.shape[1]):
        rows = images_of_class(ids, labels, cls)
        if not rows:
            continue
        k = min(clusters, len(rows))
        found = KMeans(n_clusters=k, random_state=seed, n_init=restarts, max_iter=300).fit_predict(
            features[rows]
        )
        # Number clusters by first appearance, so equal partitions give equal labels.
        order = {c: i for i, c in enumerate(dict.fromkeys(found.tolist()))}
        out[cls] = {ids[r]: order[c] for r, c in zip(rows, found.tolist(), strict=True)}
    return out


def coat_assignments(
    ids: tuple[str, ...], labels: np.ndarray, objects: Mapping[str, Sequence[SynthObject]]
) -> Assignments:
    """Each class's images grouped by the coat they show for it (`image_variant`, numbered by first
    appearance like k-means clusters)."""
    out: Assignments = {}
    for cls in range(labels.shape[1]):
        coats = {
            ids[r]: image_variant(objects.get(ids[r], ()), cls) for r in images_of_class(ids, labels, cls)
        }
        order = {v: i for i, v in enumerate(dict.fromkeys(coats.values()))}
        if coats:
            out[cls] = {image_id: order[v] for image_id, v in coats.items()}
    return out


class ScCam(SubCategoryMethod):
    name = "sc_cam"
    description = (
        "SC-CAM: k-means sub-categories of each class from the previous round's features (Chang et al. 2020)"
    )
    Config = ScCamConfig

    def rounds(self, params: ScCamConfig) -> int:
        return params.rounds + 1  # round 0 is the plain classifier

    def round_knobs(
        self, params: ScCamConfig, round_index: int
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        if round_index == 0:  # the plain classifier: none of the method's knobs
            return {}, {}
        knobs = asdict(params)
        del knobs["rounds"]  # how many rounds follow does not change this one
        if params.sub_labels == "oracle":  # the coats do not depend on K or k-means
            return {"sub_labels": "oracle"}, knobs
        return {"clusters": params.clusters, "kmeans_init": params.kmeans_init}, knobs

    def targets(
        self, round_index: int, previous: SplitParams | None, context: RoundInputs, params: ScCamConfig
    ) -> RoundTargets | None:
        if params.sub_labels == "oracle" and context.variants is None:  # before round 0 trains
            raise ConfigError(
                f"seed.params.sub_labels: 'oracle' takes the hidden coats from {VARIANTS_FILE}, and "
                f"{context.data.root} has none with more than one coat (the synthetic benchmark with "
                "data.synthetic.variants > 1 has)"
            )
        if round_index == 0 or previous is None:
            return None
        labels = image_labels(context.ids, context.data.labels)
        if params.sub_labels == "oracle":
            assert context.variants is not None
            found = coat_assignments(context.ids, labels, context.variants)
            return targets_from_assignments(context.ids, labels, found, {})
        assert isinstance(previous, SubCategoryNet)
        model = previous.to(context.runtime.device).eval()
        features = context.features(model.pooled)
        np.save(context.folder / "features.npy", features.astype(np.float16), allow_pickle=False)
        found = kmeans_per_class(
            features, context.ids, labels, params.clusters, context.rng_seed, params.kmeans_init
        )
        targets = targets_from_assignments(context.ids, labels, found, {})
        log.info("sc_cam round %d: %d sub-categories", round_index, targets.outputs)
        return targets

    def sub_weight(self, params: ScCamConfig) -> float:
        return params.lambda_sub

    def warm_start(self, params: ScCamConfig) -> bool:
        return not params.restart


METHOD = ScCam()
