"""Refine's third step (Ahn & Kwak 2018, section 3.3, psa's infer_aff): the random walk over the train
split with the trained AffinityNet, images of one size embedded together (runtime.infer_batch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from wsss.config import RefineConfig
from wsss.data.batches import same_size_batches
from wsss.data.classes import write_mask
from wsss.data.transforms import to_tensor
from wsss.data.voc import VocDataset
from wsss.metrics import ConfusionMatrix
from wsss.models.affinity import AffinityNet
from wsss.ops.cam import background_power, labels_from_scores
from wsss.ops.random_walk import pooled_scores, random_walk, transition_matrix
from wsss.runtime import Runtime
from wsss.stages.cam_files import load_cams


@torch.no_grad()
def embed(model: AffinityNet, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(B, D, h, w) embeddings of images of one size, each padded to the stride as psa pads."""
    height, width = images[0].shape[:2]
    stride = model.stride
    x = torch.stack([to_tensor(image) for image in images])
    x = F.pad(x, (0, -width % stride, 0, -height % stride)).to(device)
    return model(x).float()


@torch.no_grad()
def walk_embedding(
    embedding: torch.Tensor, stride: int, cams: np.ndarray, keys: np.ndarray, cfg: RefineConfig
) -> np.ndarray:
    """Pseudo mask for one image from its (D, h, w) embedding: walk, upsample, crop, argmax."""
    height, width = cams.shape[1:]
    device = embedding.device
    scores = torch.from_numpy(np.concatenate([background_power(cams, cfg.rw_alpha)[None], cams])).to(device)
    pooled = pooled_scores(scores, stride)
    embedding = embedding[:, : pooled.shape[1], : pooled.shape[2]]  # the net may round sizes up
    pooled = pooled[:, : embedding.shape[1], : embedding.shape[2]]
    transition = transition_matrix(embedding, cfg.radius, cfg.beta, cfg.pair_origins)
    walked = random_walk(pooled, transition, 2**cfg.logt)
    size = (walked.shape[1] * stride, walked.shape[2] * stride)
    up = F.interpolate(walked[None], size=size, mode="bilinear", align_corners=False)[0, :, :height, :width]
    if up.shape[1:] != (height, width):  # the grid covered less than the image: stretch the remainder
        up = F.interpolate(walked[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return labels_from_scores(up.cpu().numpy(), keys)


def walk_all(
    model: AffinityNet, cfg: RefineConfig, data: VocDataset, seed_dir: Path, out_dir: Path, runtime: Runtime
) -> ConfusionMatrix:
    """Every train image's pseudo mask into `out_dir`; the confusion of those of the eval split."""
    pseudo = ConfusionMatrix(data.num_classes)
    total = len(data.train_ids)
    with tqdm(total=total, desc="refine: random walk", disable=not runtime.progress, leave=False) as bar:
        for ids in same_size_batches(data.train_ids, data.image_size, runtime.infer_batch):
            images = [data.read_image(i) for i in ids]
            embeddings = embed(model, images, runtime.device)
            for image_id, image, embedding in zip(ids, images, embeddings, strict=True):
                keys, cams = load_cams(seed_dir, image_id, image.shape[:2])
                mask = walk_embedding(embedding, model.stride, cams, keys, cfg)
                write_mask(out_dir / f"{image_id}.png", mask)
                if image_id in data.eval_ids:
                    pseudo.update(data.read_mask(image_id, expect_shape=mask.shape), mask)
            bar.update(len(ids))
    return pseudo
