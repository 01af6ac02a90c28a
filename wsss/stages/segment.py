"""Segment stage: train DeepLab-v2 on the refine stage's pseudo masks, predict the val split, score it
(and the held-out split, data.holdout_split, apart from it).

Artifact: `<id>.png` val (and held-out) predictions (palette PNG), `model.pt`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wsss.checkpoints import save_state
from wsss.config import SegmentConfig
from wsss.data.batches import same_size_batches
from wsss.data.classes import IGNORE_INDEX, write_mask
from wsss.data.torchsets import SegmentationSet
from wsss.data.transforms import TrainTransform, resize_image, scaled_size, to_tensor
from wsss.data.voc import VocDataset
from wsss.loop import TrainStats, train_model
from wsss.metrics import ConfusionMatrix, Scores
from wsss.models.deeplab import DeepLabV2
from wsss.ops.crf import crf_refine, require_crf
from wsss.runtime import Runtime

log = logging.getLogger(__name__)

# 2: balanced_ce balances background against foreground (it balanced every class before).
FORMAT_VERSION = 2


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Background against foreground: the mean pixel loss over background pixels and the mean over
    foreground pixels, averaged (either alone when the batch has no pixel of the other).

    The AdvCAM/AMN/DSRG family trains DeepLab with this loss, so that the background, most of every
    VOC image, does not dominate; it also keeps ImageNet-initialised DeepLab from diverging.
    """
    pixel_loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    valid = target != IGNORE_INDEX
    parts = [pixel_loss[side & valid].mean() for side in (target == 0, target > 0) if (side & valid).any()]
    return torch.stack(parts).mean() if parts else pixel_loss.sum() * 0.0


def class_balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the classes present in the batch of each class's mean pixel loss (every class weighs
    the same however many pixels it has). Not a reference loss: `segment.balance_per_class`."""
    pixel_loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    classes = [c for c in target.unique().tolist() if c != IGNORE_INDEX]
    if not classes:
        return pixel_loss.sum() * 0.0
    return torch.stack([pixel_loss[target == c].mean() for c in classes]).mean()


def msc_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    scales: tuple[float, ...],
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """kazuto1011's MSC training loss: the crop and its rescaled copies through the network, and the
    pixel-wise max of their logits; the sum of the criterion over all of them (main.py:232-236).
    kazuto1011 compares logits at the 1.0 logit grid with nearest-resized labels; here every logit map
    is upsampled to the crop, as the single-scale loss is."""
    size = images.shape[-2:]
    logits = [model(images).float()]
    for scale in scales[1:]:
        scaled = scaled_size(size[0], size[1], scale)
        small = model(F.interpolate(images, size=scaled, mode="bilinear", align_corners=False)).float()
        logits.append(F.interpolate(small, size=size, mode="bilinear", align_corners=False))
    logits.append(torch.stack(logits).amax(dim=0))
    return torch.stack([criterion(out, masks) for out in logits]).sum()


def train_deeplab(
    cfg: SegmentConfig, data: VocDataset, mask_dir: Path, rng_seed: int, runtime: Runtime
) -> tuple[DeepLabV2, TrainStats]:
    def criterion(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if cfg.balanced_ce and cfg.balance_per_class:
            return class_balanced_cross_entropy(logits, masks)
        if cfg.balanced_ce:
            return balanced_cross_entropy(logits, masks)
        return F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)

    def loss_fn(m: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        images, masks = batch
        if not cfg.msc_scales:
            return criterion(m(images).float(), masks), {}
        return msc_loss(m, images, masks, cfg.msc_scales, criterion), {}

    return train_model(
        lambda: DeepLabV2(cfg.backbone, data.num_classes, cfg.aspp_rates),
        SegmentationSet(
            data, data.train_ids, lambda i: mask_dir / f"{i}.png", TrainTransform(cfg.train), stored=True
        ),
        loss_fn,
        cfg.train,
        runtime,
        rng_seed,
        desc="segment",
    )


@torch.no_grad()
def batch_predict_probs(
    model: DeepLabV2, images: torch.Tensor, scales: tuple[float, ...], flip: bool, device: torch.device
) -> torch.Tensor:
    """(B, C, H, W) class probabilities of normalised (B, 3, H, W) images of one size, averaged over
    scales (and flips), at the images' size: one forward per scale for the batch and its flips."""
    count, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    total = torch.zeros((1,), device=device)
    for scale in scales:
        size = scaled_size(height, width, scale)
        batch = resize_image(images, size).to(device)
        if flip:
            batch = torch.cat([batch, batch.flip(-1)])
        logits = model(batch).float()
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)
        total = total + (probs[:count] + probs[count:].flip(-1) if flip else probs)
    return total / total.sum(dim=1, keepdim=True)


def _predict_and_score(
    model: DeepLabV2,
    cfg: SegmentConfig,
    data: VocDataset,
    ids: tuple[str, ...],
    out_dir: Path,
    runtime: Runtime,
    split: str,
) -> Scores:
    """Predict `ids` into `out_dir` as palette PNGs and score them against their masks."""
    confusion = ConfusionMatrix(data.num_classes)
    bar = tqdm(total=len(ids), desc=f"segment: predict {split}", disable=not runtime.progress, leave=False)
    with bar:
        for batch in same_size_batches(ids, data.image_size, runtime.infer_batch):
            images = [data.read_image(i) for i in batch]
            stacked = torch.stack([to_tensor(image) for image in images])
            all_probs = batch_predict_probs(model, stacked, cfg.scales, cfg.flip, runtime.device)
            for image_id, image, probs in zip(batch, images, all_probs.cpu().numpy(), strict=True):
                if cfg.crf.enabled:
                    probs = crf_refine(image, probs, cfg.crf, "segment.crf.enabled")
                prediction = probs.argmax(axis=0).astype(np.uint8)
                write_mask(out_dir / f"{image_id}.png", prediction)
                confusion.update(data.read_mask(image_id, expect_shape=prediction.shape), prediction)
            bar.update(len(batch))
    return confusion.scores()


def run(
    cfg: SegmentConfig, data: VocDataset, refine_dir: Path, out_dir: Path, *, rng_seed: int, runtime: Runtime
) -> dict[str, Any]:
    if cfg.crf.enabled:
        require_crf("segment.crf.enabled")
    model, stats = train_deeplab(cfg, data, refine_dir, rng_seed, runtime)
    save_state(model.state_dict(), out_dir / "model.pt")
    runtime.place(model).eval()
    val = _predict_and_score(model, cfg, data, data.val_ids, out_dir, runtime, "val")
    held_out = (
        _predict_and_score(model, cfg, data, data.holdout_ids, out_dir, runtime, "holdout")
        if data.holdout_ids
        else None
    )
    return {
        "val_miou": val.miou,
        "val_iou": list(val.iou),
        "val_fg_precision": val.fg_precision,
        "val_fg_recall": val.fg_recall,
        **({"holdout_miou": held_out.miou, "holdout_iou": list(held_out.iou)} if held_out else {}),
        **stats.metrics("segment"),
    }
