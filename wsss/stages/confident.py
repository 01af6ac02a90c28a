"""Confident labels from CAMs, refine's first step (psa infer_cls.py): foreground where max CAM >
(1 - max CAM)^alpha_low, background where it is below (1 - max CAM)^alpha_high, ignore (255) in
between, each map optionally through a dense CRF. Cached apart from AffinityNet's training and the
walk (wsss.stages.refine.RefineSteps), keyed by LABEL_KNOBS."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wsss.config import RefineConfig
from wsss.data.classes import IGNORE_INDEX, write_mask
from wsss.data.voc import VocDataset
from wsss.errors import DamagedArtifact
from wsss.metrics import ConfusionMatrix
from wsss.ops.cam import background_power, labels_from_scores
from wsss.ops.crf import crf_refine
from wsss.runtime import Runtime
from wsss.stages.cam_files import load_cams

LABEL_KNOBS = ("alpha_low", "alpha_high", "crf", "grid_labels")  # what the labels depend on
CONFIDENT_DIR = "confident"
# With grid_labels psa, CONFIDENT_DIR also holds the low- and high-alpha maps, in these folders.
LOW_DIR, HIGH_DIR = "low", "high"


def two_sided_labels(
    cams: np.ndarray, keys: np.ndarray, cfg: RefineConfig, image: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """psa's low- and high-alpha label maps (infer_cls.py: argmax of [(1 - max CAM)^alpha; CAMs],
    each through the CRF when it is on): the first keeps confident foreground, the second confident
    background."""

    def labels(alpha: float) -> np.ndarray:
        scores = np.concatenate([background_power(cams, alpha)[None], cams])
        if cfg.crf.enabled:
            assert image is not None
            scores = crf_refine(image, scores, cfg.crf, "refine.crf.enabled")
        return labels_from_scores(scores, keys)

    return labels(cfg.alpha_low), labels(cfg.alpha_high)


def combine_two_sided(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Foreground where the low-alpha map says so, background where the high-alpha one does, else ignore."""
    out = np.where(low > 0, low, IGNORE_INDEX).astype(np.uint8)
    out[high == 0] = 0
    return out


def confident_labels(
    cams: np.ndarray, keys: np.ndarray, cfg: RefineConfig, image: np.ndarray | None = None
) -> np.ndarray:
    """psa's two-sided seeds in one map: confident foreground, confident background, ignore (255)."""
    return combine_two_sided(*two_sided_labels(cams, keys, cfg, image))


def _image_labels(
    cfg: RefineConfig, data: VocDataset, seed_dir: Path, label_dir: Path, image_id: str
) -> tuple[np.ndarray | None, int, int]:
    """One train image's confident labels written to `label_dir`; on the eval split also its
    (confusion matrix of the confident pixels, labelled pixels given one, labelled pixels)."""
    image = data.read_image(image_id) if cfg.crf.enabled else None
    shape = image.shape[:2] if image is not None else data.image_size(image_id)
    keys, cams = load_cams(seed_dir, image_id, shape)
    low, high = two_sided_labels(cams, keys, cfg, image)
    labels = combine_two_sided(low, high)
    write_mask(label_dir / f"{image_id}.png", labels)
    if cfg.grid_labels == "psa":  # psa pools the two maps apart (psa_grid_labels)
        write_mask(label_dir / LOW_DIR / f"{image_id}.png", low)
        write_mask(label_dir / HIGH_DIR / f"{image_id}.png", high)
    if image_id not in data.eval_ids:
        return None, 0, 0
    gt = data.read_mask(image_id, expect_shape=labels.shape)
    confident = labels != IGNORE_INDEX
    seeds = ConfusionMatrix(data.num_classes)
    seeds.update(np.where(confident, gt, IGNORE_INDEX), labels)
    return seeds.matrix, int((confident & (gt != IGNORE_INDEX)).sum()), int((gt != IGNORE_INDEX).sum())


def write_confident_labels(
    cfg: RefineConfig, data: VocDataset, seed_dir: Path, folder: Path, runtime: Runtime
) -> None:
    """Step 1: confident labels of every train image (and how many and how right they are on the eval
    split, in `metrics.json`).

    With the CRF on, two dense CRFs per image (0.8-1.1 s on a VOC image, single-threaded in
    pydensecrf) would leave a GPU idle for hours, so the images go to `runtime.threads` processes
    (spawned: a forked torch process can deadlock in OpenMP); the labels do not depend on how many.
    """
    label_dir = folder / CONFIDENT_DIR
    label_dir.mkdir(parents=True, exist_ok=True)
    if cfg.grid_labels == "psa":
        (label_dir / LOW_DIR).mkdir(exist_ok=True)
        (label_dir / HIGH_DIR).mkdir(exist_ok=True)
    one = functools.partial(_image_labels, cfg, data, seed_dir, label_dir)
    ids = data.train_ids
    with contextlib.ExitStack() as stack:
        results: Iterable[tuple[np.ndarray | None, int, int]] = map(one, ids)
        if cfg.crf.enabled and runtime.threads > 1 and len(ids) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(runtime.threads, mp_context=get_context("spawn")))
            results = pool.map(one, ids, chunksize=max(1, min(16, len(ids) // (4 * runtime.threads))))
        seeds = ConfusionMatrix(data.num_classes)
        covered = total = 0
        for matrix, image_covered, image_total in tqdm(
            results, total=len(ids), desc="refine: seeds", disable=not runtime.progress, leave=False
        ):
            if matrix is not None:
                seeds.matrix += matrix
                covered, total = covered + image_covered, total + image_total
    metrics = {
        "confident_fraction": covered / max(total, 1),  # share of labelled pixels given a confident label
        "confident_accuracy": seeds.scores().pixel_accuracy,  # how often those confident labels are right
    }
    (folder / "metrics.json").write_text(json.dumps(metrics) + "\n")


def label_metrics(folder: Path) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads((folder / "metrics.json").read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise DamagedArtifact(folder / "metrics.json", f"damaged confident-label metrics ({exc})") from None
