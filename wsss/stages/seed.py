"""Seed stage: train a CAM classifier with the configured method, infer multi-scale CAMs over the train
split and measure them against the ground truth (at the configured threshold and over a sweep).

Artifact: `model.pt`, `cams/<id>.npz` (the image's class indices and CAMs (P, H, W) in [0, 1], float16,
losslessly compressed: wsss.stages.cam_files),
`cam_curve.csv` (threshold, mIoU).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wsss import methods
from wsss.checkpoints import save_state
from wsss.config import SeedConfig
from wsss.data.batches import same_size_batches
from wsss.data.transforms import to_tensor
from wsss.data.voc import VocDataset
from wsss.metrics import ConfusionMatrix, ThresholdSweep, scores_from_confusion
from wsss.models.backbone import SplitParams
from wsss.ops.cam import batch_multiscale_cams, cams_to_mask
from wsss.runtime import Runtime
from wsss.stages.cam_files import CAM_DIR, cam_path, save_cams
from wsss.stages.rounds import RoundCache, RoundResult, keep_round_files, local_rounds, train_rounds

log = logging.getLogger(__name__)

# 2: CPN's S_N counts superpixels per 448 px crop at stride 8, scaled to the network's grid (it was per
# crop), so a seed stage computed before means something else under the same settings.
FORMAT_VERSION = 2


def train_classifier(
    cfg: SeedConfig, data: VocDataset, rng_seed: int, runtime: Runtime, rounds: RoundCache | None = None
) -> RoundResult:
    """The method's network trained (over its rounds, wsss.stages.rounds; cached in `rounds`, or in a
    temporary folder)."""
    if rounds is not None:
        return train_rounds(cfg, data, rng_seed, runtime, rounds)
    with tempfile.TemporaryDirectory(prefix="wsss-rounds-") as work:
        return train_rounds(cfg, data, rng_seed, runtime, local_rounds(Path(work)))


def _curve_metrics(sweep: ThresholdSweep, at_threshold: ConfusionMatrix, threshold: float) -> dict[str, Any]:
    confusions = sweep.confusions()
    curve = [scores_from_confusion(c).miou for c in confusions]
    best = int(np.argmax(curve))
    best_scores = scores_from_confusion(confusions[best])
    scores = at_threshold.scores()
    return {
        "cam_miou": scores.miou,
        "cam_threshold": threshold,
        "cam_best_threshold": float(sweep.thresholds[best]),
        "cam_miou_best": best_scores.miou,
        # Foreground precision/recall at the configured threshold: recall well below precision is the
        # partial-activation problem (CAMs fire on discriminative parts only). At the IoU-optimal
        # threshold the two are pushed towards balance, so they are reported there as well.
        "cam_fg_precision": scores.fg_precision,
        "cam_fg_recall": scores.fg_recall,
        "cam_fg_precision_best": best_scores.fg_precision,
        "cam_fg_recall_best": best_scores.fg_recall,
        "cam_iou": list(scores.iou),
        "cam_iou_best": list(best_scores.iou),
        "cam_curve": {"thresholds": [round(float(t), 6) for t in sweep.thresholds], "miou": curve},
    }


def _score(
    data: VocDataset,
    image_id: str,
    maps: np.ndarray,
    keys: np.ndarray,
    threshold: float,
    sweep: ThresholdSweep,
    at_threshold: ConfusionMatrix,
) -> None:
    maps = maps.astype(np.float16).astype(np.float32)  # score exactly what consumers will read back
    gt = data.read_mask(image_id, expect_shape=maps.shape[1:])
    sweep.update(gt, maps, keys)
    at_threshold.update(gt, cams_to_mask(maps, keys, threshold))


def infer_and_evaluate(
    model: SplitParams, cfg: SeedConfig, data: VocDataset, out_dir: Path, runtime: Runtime
) -> dict[str, Any]:
    """Write every train image's CAMs and score those of the eval split (data.eval_split, by default
    the whole train split) against their ground-truth masks in the same pass."""
    (out_dir / CAM_DIR).mkdir(parents=True, exist_ok=True)
    runtime.place(model).eval()
    thresholds = np.arange(0.0, 1.0 + 1e-9, cfg.sweep_step)
    sweep = ThresholdSweep(data.num_classes, thresholds)
    at_threshold = ConfusionMatrix(data.num_classes)
    scored = data.eval_ids
    method = methods.get(cfg.method)
    batches = same_size_batches(data.train_ids, data.image_size, runtime.infer_batch)
    with tqdm(total=len(data.train_ids), desc="seed: CAMs", disable=not runtime.progress, leave=False) as bar:
        for ids in batches:
            images = torch.stack([to_tensor(data.read_image(i)) for i in ids])
            keys = [np.flatnonzero(data.labels(i)) for i in ids]
            cams = batch_multiscale_cams(
                model,
                images,
                keys,
                cfg.scales,
                cfg.flip,
                runtime.device,
                read=lambda m, x: method.cams(m, x, cfg.params),
                normalise=lambda total: method.normalise(total, cfg.params),
            )
            for image_id, image_keys, image_cams in zip(ids, keys, cams, strict=True):
                maps = image_cams.cpu().numpy()
                save_cams(cam_path(out_dir, image_id), image_keys, maps)
                if image_id in scored:
                    _score(data, image_id, maps, image_keys, cfg.bg_threshold, sweep, at_threshold)
            bar.update(len(ids))
    metrics = _curve_metrics(sweep, at_threshold, cfg.bg_threshold)
    curve = metrics["cam_curve"]
    lines = [f"{t},{m:.6f}" for t, m in zip(curve["thresholds"], curve["miou"], strict=True)]
    (out_dir / "cam_curve.csv").write_text("threshold,miou\n" + "\n".join(lines) + "\n")
    return metrics


def _round_metrics(result: RoundResult) -> dict[str, Any]:
    """The rounds' count and the last round's scalar record entries (e.g. sub-category purity)."""
    if not result.records:
        return {}
    last = result.records[-1]
    scalars = {k: v for k, v in last.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return {
        **{f"seed_{k}": v for k, v in scalars.items() if k != "round"},
        "seed_rounds": len(result.records),
    }


def run(
    cfg: SeedConfig,
    data: VocDataset,
    out_dir: Path,
    *,
    rng_seed: int,
    runtime: Runtime,
    rounds: RoundCache | None = None,
) -> dict[str, Any]:
    """Train, infer and evaluate; returns the stage's metrics."""
    result = train_classifier(cfg, data, rng_seed, runtime, rounds)
    keep_round_files(result, out_dir)
    save_state(result.model.state_dict(), out_dir / "model.pt")
    return {
        **infer_and_evaluate(result.model, cfg, data, out_dir, runtime),
        **result.stats.metrics("seed"),
        **_round_metrics(result),
    }
