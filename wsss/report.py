"""Pictures and tables that show what a stage produced: CAM overlays, mask samples, the CAM threshold
curve and per-class IoU. Written as files, so any tracker (MLflow in the tuner) can ship them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from wsss.data.classes import IGNORE_INDEX, voc_palette
from wsss.data.image_files import read_mask
from wsss.data.voc import VocDataset
from wsss.pipeline import StageOutcome
from wsss.stages.cam_files import load_cams

_PALETTE = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)
_IGNORE_COLOUR = np.array([255, 255, 255], dtype=np.uint8)


def mask_picture(mask: np.ndarray) -> np.ndarray:
    picture = _PALETTE[mask]
    picture[mask == IGNORE_INDEX] = _IGNORE_COLOUR
    return picture


def cam_picture(image: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """The image under a red (high) to blue (low) heat map of the top CAM."""
    peak = cams.max(axis=0) if len(cams) else np.zeros(image.shape[:2], np.float32)
    heat = np.stack([peak, np.zeros_like(peak), 1.0 - peak], axis=-1) * 255.0
    return (0.45 * image + 0.55 * heat).astype(np.uint8)


def _grid(rows: list[list[np.ndarray]], size: int = 128) -> np.ndarray:
    """Tiles resized to `size` px tall and laid out row by row."""
    lines = []
    for row in rows:
        tiles = []
        for tile in row:
            h, w = tile.shape[:2]
            tiles.append(
                np.asarray(
                    Image.fromarray(tile).resize(
                        (max(1, round(w * size / h)), size), Image.Resampling.NEAREST
                    )
                )
            )
        lines.append(np.concatenate(tiles, axis=1))
    width = max(line.shape[1] for line in lines)
    return np.concatenate(
        [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))) for line in lines], axis=0
    )


def samples_picture(outcome: StageOutcome, data: VocDataset, count: int = 4) -> np.ndarray:
    """Rows of [image | what the stage made | ground truth] for the first `count` images it covers."""
    rows = []
    # Train-split stages show images of the eval split: their ground truth is the one scored.
    ids = data.val_ids if outcome.stage == "segment" else [i for i in data.train_ids if i in data.eval_ids]
    for image_id in ids[:count]:
        image = data.read_image(image_id)
        truth = mask_picture(data.read_mask(image_id))
        if outcome.stage == "seed":
            made = cam_picture(image, load_cams(outcome.path, image_id, image.shape[:2])[1])
        else:
            made = mask_picture(read_mask(outcome.path / f"{image_id}.png", data.num_classes))
        rows.append([image, made, truth])
    return _grid(rows)


def curve_picture(
    curve: dict[str, list[float]], configured: float, width: int = 480, height: int = 300
) -> np.ndarray:
    """CAM mIoU against the background threshold, the best and the configured thresholds marked."""
    thresholds, mious = np.asarray(curve["thresholds"]), np.asarray(curve["miou"])
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    left, right, top, bottom = 48, width - 16, 16, height - 36
    top_value = max(float(mious.max()), 1e-6) * 1.1

    def point(t: float, m: float) -> tuple[float, float]:
        return left + (right - left) * t / max(float(thresholds[-1]), 1e-6), bottom - (
            bottom - top
        ) * m / top_value

    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for fraction in (0.0, 0.5, 1.0):
        x, _ = point(fraction * float(thresholds[-1]), 0)
        draw.text((x - 8, bottom + 6), f"{fraction * float(thresholds[-1]):.1f}", fill="black")
        _, y = point(0, fraction * top_value)
        draw.text((4, y - 6), f"{fraction * top_value:.2f}", fill="black")
    draw.text(((left + right) // 2 - 60, height - 16), "background threshold", fill="black")
    draw.line(
        [point(float(t), float(m)) for t, m in zip(thresholds, mious, strict=True)], fill="navy", width=2
    )
    best = int(np.argmax(mious))
    for t, colour, label in ((float(thresholds[best]), "red", "best"), (configured, "green", "configured")):
        x, _ = point(t, 0)
        draw.line([(x, top), (x, bottom)], fill=colour)
        draw.text((x + 3, top + (0 if label == "best" else 14)), f"{label} {t:.2f}", fill=colour)
    return np.asarray(canvas)


def subcategory_picture(
    assignments: dict[str, dict[str, int]], data: VocDataset, per_cluster: int = 4, rows: int = 24
) -> np.ndarray:
    """A row per (class, sub-category): a label tile, then up to `per_cluster` of its images."""
    lines = []
    for cls, found in sorted(assignments.items(), key=lambda kv: int(kv[0])):
        clusters: dict[int, list[str]] = {}
        for image_id, cluster in sorted(found.items()):
            clusters.setdefault(int(cluster), []).append(image_id)
        for cluster, ids in sorted(clusters.items()):
            label = Image.new("RGB", (128, 128), "white")
            name = data.class_names[int(cls)] if int(cls) < len(data.class_names) else cls
            ImageDraw.Draw(label).text((6, 50), f"{name}\n#{cluster} ({len(ids)})", fill="black")
            lines.append([np.asarray(label), *[data.read_image(i) for i in ids[:per_cluster]]])
            if len(lines) == rows:
                return _grid(lines, size=96)
    return _grid(lines, size=96)


def _round_records(seed_dir: Path) -> list[tuple[str, dict[str, dict[str, int]]]]:
    """(round, assignments) of each seed round that clustered images (wsss.stages.rounds)."""
    found = []
    for record in sorted((seed_dir / "rounds").glob("*/record.json")):
        try:
            content = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        assignments = content.get("assignments") if isinstance(content, dict) else None
        if isinstance(assignments, dict) and assignments:
            found.append((record.parent.name, assignments))
    return found


def iou_table(outcomes: dict[str, StageOutcome], data: VocDataset) -> pa.Table:
    """Per-class IoU of every finished stage: CAMs (configured and best threshold), pseudo masks, val."""
    columns: dict[str, list[object]] = {"class": ["background", *data.class_names]}
    sources = {"seed": ("cam_iou", "cam_iou_best"), "refine": ("pseudo_iou",), "segment": ("val_iou",)}
    for stage, names in sources.items():
        if stage in outcomes:
            for name in names:
                columns[name] = list(outcomes[stage].metrics.get(name, [None] * data.num_classes))
    return pa.table(columns)


def write_stage_report(
    outcome: StageOutcome, outcomes: dict[str, StageOutcome], data: VocDataset, out_dir: Path
) -> list[Path]:
    """Files describing one finished stage (and the IoU table so far); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{outcome.stage}_samples.png"]
    Image.fromarray(samples_picture(outcome, data)).save(written[0])
    if outcome.stage == "seed" and "cam_curve" in outcome.metrics:
        path = out_dir / "cam_threshold_curve.png"
        Image.fromarray(curve_picture(outcome.metrics["cam_curve"], outcome.metrics["cam_threshold"])).save(
            path
        )
        written.append(path)
    if outcome.stage == "seed":
        for round_name, assignments in _round_records(outcome.path):
            path = out_dir / f"seed_subcategories_round{round_name}.png"
            Image.fromarray(subcategory_picture(assignments, data)).save(path)
            written.append(path)
    table_path = out_dir / "per_class_iou.parquet"
    pq.write_table(iou_table(outcomes, data), table_path)
    return [*written, table_path]
