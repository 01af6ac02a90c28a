"""Refine stage: AffinityNet (Ahn & Kwak, CVPR 2018) turns CAMs into pseudo masks.

1. Confident labels from the CAMs: foreground where max CAM > (1 - max CAM)^alpha_low, background
   where it is below (1 - max CAM)^alpha_high, ignore (255) in between; optionally through a dense CRF.
2. Train AffinityNet on pixel pairs within `radius` on its feature grid: same-label pairs should have
   affinity 1, different-label pairs 0 (psa's loss: bg/4 + fg/4 + neg/2).
3. Random walk (wsss.stages.walk): propagate [(1 - max CAM)^rw_alpha; CAMs] with the affinity
   transition matrix for 2^logt steps; the argmax is the pseudo mask.

Steps 1 and 2 are cached apart (`RefineSteps`), each keyed by what it depends on, so a search over the
walk's knobs retrains nothing and one over AffinityNet's training relabels nothing.

Artifact: `<id>.png` pseudo masks (palette PNG) for the train split, `confident/<id>.png` (with
`grid_labels: psa` also `confident/low/<id>.png` and `confident/high/<id>.png`), `model.pt`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from wsss.checkpoints import load_stored_state, save_state
from wsss.config import RefineConfig
from wsss.configio import to_mapping
from wsss.data.classes import IGNORE_INDEX
from wsss.data.torchsets import LabelPairSet, SegmentationSet, split_pair
from wsss.data.transforms import TrainTransform
from wsss.data.voc import VocDataset
from wsss.errors import DamagedArtifact, bounded
from wsss.loop import TrainStats, train_model
from wsss.models.affinity import AffinityNet, affinity
from wsss.ops.crf import require_crf
from wsss.ops.random_walk import (
    origin_margin,
    pair_offsets,
    shifted_pairs,
)
from wsss.runtime import Runtime
from wsss.stages.confident import (
    CONFIDENT_DIR,
    HIGH_DIR,
    LABEL_KNOBS,
    LOW_DIR,
    label_metrics,
    write_confident_labels,
)
from wsss.stages.rounds import RoundCache, load_stats, local_rounds, payload_key
from wsss.stages.walk import walk_all

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def grid_labels(
    labels: torch.Tensor, size: tuple[int, int], num_classes: int, rule: str = "majority"
) -> torch.Tensor:
    """Label maps (B, H, W) on the embedding grid.

    majority: each cell takes its most frequent label, ignored pixels counting as a label of their own,
    so cells at object edges keep their label and give the negative pairs the affinity loss learns
    boundaries from. pure: a cell keeps a label only if all its pixels agree (stricter; fewer pairs at
    edges). psa: `labels` are low/high-alpha pairs, combined per cell as psa does (psa_grid_labels).
    """
    if rule == "psa":
        return psa_grid_labels(labels, size, num_classes)
    best, label = _pooled_argmax(labels, size, num_classes, ignore_is_label=True)
    unusable = label == num_classes
    if rule == "pure":
        unusable |= best < 0.999
    label[unusable] = IGNORE_INDEX
    return label


def _pooled_argmax(
    labels: torch.Tensor, size: tuple[int, int], num_classes: int, ignore_is_label: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(share of the winning label, winning label) per grid cell of one-hot label maps average-pooled
    to `size`; ignored pixels are label `num_classes` or, with `ignore_is_label` off, count for none."""
    onehot = F.one_hot(torch.where(labels == IGNORE_INDEX, num_classes, labels), num_classes + 1)
    if not ignore_is_label:
        onehot = onehot[..., :num_classes]
    share = F.adaptive_avg_pool2d(onehot.permute(0, 3, 1, 2).float(), size)
    return share.max(dim=1)


def psa_grid_labels(pairs: torch.Tensor, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """psa's grid labels from (low-alpha, high-alpha) label pairs (LabelPairSet): train_aff.py pools
    the two CRF score maps separately (AvgPool2d(8)) and voc12/data.py takes the argmax of each,
    foreground from the low-alpha cell (its background -> ignore), background wherever the high-alpha
    cell's argmax is background, ignore where no pixel of the cell lies inside the image. Pooled one-hot
    labels stand in for the pooled scores (the stage keeps label maps, not score maps)."""
    low, high = split_pair(pairs)
    share, label_low = _pooled_argmax(low, size, num_classes, ignore_is_label=False)
    _, label_high = _pooled_argmax(high, size, num_classes, ignore_is_label=False)
    out = torch.where(label_low == 0, IGNORE_INDEX, label_low)
    out[label_high == 0] = 0
    out[share == 0] = IGNORE_INDEX  # psa's no_score_region: padding only
    return out


def affinity_loss(
    embedding: torch.Tensor, labels: torch.Tensor, radius: int, pair_origins: str = "all"
) -> tuple[torch.Tensor, dict[str, float]]:
    """psa's loss over the pairs within `radius`: L = L_bg/4 + L_fg/4 + L_neg/2 (Ahn & Kwak, eq. 4-6);
    every pair, or only those from psa's origins (refine.pair_origins).

    Sums and counts stay on the device (masked sums, not boolean indexing, which waits for the GPU):
    one host sync for the parts at the end instead of ~200 a step (issue 25)."""
    zero = embedding.new_zeros((), dtype=torch.float32)
    sums = {"bg": zero, "fg": zero, "neg": zero}
    counts = {"bg": zero, "fg": zero, "neg": zero}
    margin = origin_margin(pair_origins, radius, (labels.shape[-2], labels.shape[-1]))
    for dy, dx in pair_offsets(radius):
        if dy >= labels.shape[-2] or abs(dx) >= labels.shape[-1]:
            continue
        fa, fb = shifted_pairs(embedding, dy, dx, margin)
        la, lb = shifted_pairs(labels, dy, dx, margin)
        a = affinity(fa.float(), fb.float())
        valid = (la != IGNORE_INDEX) & (lb != IGNORE_INDEX)
        same = valid & (la == lb)
        for name, mask, value in (
            ("bg", same & (la == 0), -torch.log(a + 1e-5)),
            ("fg", same & (la > 0), -torch.log(a + 1e-5)),
            ("neg", valid & (la != lb), -torch.log(1.0 + 1e-5 - a)),
        ):
            sums[name] = sums[name] + torch.where(mask, value, 0.0).sum()
            counts[name] = counts[name] + mask.sum()
    means = {k: sums[k] / (counts[k] + 1e-5) for k in sums}
    loss = means["bg"] / 4 + means["fg"] / 4 + means["neg"] / 2
    parts = torch.stack([means[k].detach() for k in means]).tolist()
    return loss, dict(zip(means, parts, strict=True))


def train_affinity(
    cfg: RefineConfig, data: VocDataset, label_dir: Path, rng_seed: int, runtime: Runtime
) -> tuple[AffinityNet, TrainStats]:
    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch
        embedding = m(images)
        return affinity_loss(
            embedding,
            grid_labels(labels, embedding.shape[-2:], data.num_classes, cfg.grid_labels),
            cfg.radius,
            cfg.pair_origins,
        )

    transform = TrainTransform(cfg.train)
    if cfg.grid_labels == "psa":
        dataset: SegmentationSet = LabelPairSet(
            data,
            data.train_ids,
            lambda i: (label_dir / LOW_DIR / f"{i}.png", label_dir / HIGH_DIR / f"{i}.png"),
            transform,
        )
    else:
        dataset = SegmentationSet(data, data.train_ids, lambda i: label_dir / f"{i}.png", transform)
    return train_model(
        lambda: AffinityNet(cfg.backbone, cfg.stride),
        dataset,
        loss_fn,
        cfg.train,
        runtime,
        rng_seed,
        desc="refine",
    )


@dataclass(frozen=True)
class RefineSteps:
    """Where refine's first two steps are cached (wsss.stages.rounds.RoundCache: the stage store's
    `refine_step` entries through the pipeline) and the key of the seed artifact they derive from."""

    cache: RoundCache
    seed_key: str


# What each cached step depends on (besides the dataset and the seed artifact): a search over the walk
# (beta, logt, rw_alpha) reuses the labels and the trained AffinityNet; one over the affinity training
# reuses the labels (issue 24 item 1).
AFFINITY_KNOBS = ("backbone", "train", "stride", "radius", "pair_origins", "grid_labels")
STEP_VERSION = 1


def _trained_affinity(cfg: RefineConfig, data: VocDataset, folder: Path) -> tuple[AffinityNet, TrainStats]:
    model = AffinityNet(cfg.backbone, cfg.stride)
    try:
        model.load_state_dict(load_stored_state(folder / "model.pt"))
    except (RuntimeError, ValueError) as exc:  # names or shapes of another network
        raise DamagedArtifact(
            folder / "model.pt", f"damaged AffinityNet ({bounded(str(exc), 200)})"
        ) from None
    return model, load_stats(folder)


def run(
    cfg: RefineConfig,
    data: VocDataset,
    seed_dir: Path,
    out_dir: Path,
    *,
    rng_seed: int,
    runtime: Runtime,
    steps: RefineSteps | None = None,
) -> dict[str, Any]:
    """Confident labels and AffinityNet from `steps` (computed there if missing; without `steps`, in a
    temporary folder), then the walk; returns the stage's metrics."""
    if cfg.crf.enabled:
        require_crf("refine.crf.enabled")
    if steps is None:
        with tempfile.TemporaryDirectory(prefix="wsss-refine-") as work:
            local = RefineSteps(local_rounds(Path(work)), "unstored")
            return run(cfg, data, seed_dir, out_dir, rng_seed=rng_seed, runtime=runtime, steps=local)
    knobs = to_mapping(cfg)
    base = {"dataset": data.fingerprint, "seed": steps.seed_key, "version": STEP_VERSION}
    labels_payload = {**base, "step": "labels", "knobs": {k: knobs[k] for k in LABEL_KNOBS}}
    labels = steps.cache(
        "labels", labels_payload, lambda f: write_confident_labels(cfg, data, seed_dir, f, runtime)
    )
    shutil.copytree(labels / CONFIDENT_DIR, out_dir / CONFIDENT_DIR, dirs_exist_ok=True)
    affinity_payload = {**base, "step": "affinity", "labels": payload_key(labels_payload),
                        "rng_seed": rng_seed, "knobs": {k: knobs[k] for k in AFFINITY_KNOBS}}  # fmt: skip

    def make_affinity(folder: Path) -> None:
        model, stats = train_affinity(cfg, data, labels / CONFIDENT_DIR, rng_seed, runtime)
        save_state(model.state_dict(), folder / "model.pt")
        (folder / "stats.json").write_text(json.dumps(stats.as_dict()) + "\n")

    trained = steps.cache("affinity", affinity_payload, make_affinity)
    shutil.copy2(trained / "model.pt", out_dir / "model.pt")
    model, stats = _trained_affinity(cfg, data, trained)
    runtime.place(model).eval()
    scores = walk_all(model, cfg, data, seed_dir, out_dir, runtime).scores()
    return {
        "pseudo_miou": scores.miou,
        "pseudo_iou": list(scores.iou),
        "pseudo_fg_precision": scores.fg_precision,
        "pseudo_fg_recall": scores.fg_recall,
        **label_metrics(labels),
        **stats.metrics("refine"),
    }
