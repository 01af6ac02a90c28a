"""Tiny end-to-end runs of seed -> refine -> segment -> evaluate on real (small) synthetic data."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image

from tests.helpers import TINY, tiny_config
from wsss.config_load import load_config
from wsss.data.classes import IGNORE_INDEX
from wsss.data.voc import open_dataset
from wsss.errors import MissingExtraError
from wsss.pipeline import PipelineResult, prepare_dataset, run_pipeline
from wsss.store import StageStore


def _independent_miou(pred_dir: Path, data_root: Path, ids: tuple[str, ...], num_classes: int) -> float:
    """mIoU recomputed from the PNG files with nothing from wsss: a fresh confusion matrix."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    for image_id in ids:
        gt = np.asarray(Image.open(data_root / "SegmentationClass" / f"{image_id}.png")).astype(np.int64)
        pred = np.asarray(Image.open(pred_dir / f"{image_id}.png")).astype(np.int64)
        keep = gt != IGNORE_INDEX
        conf += np.bincount(num_classes * gt[keep] + pred[keep], minlength=num_classes**2).reshape(
            num_classes, -1
        )
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


@pytest.fixture(scope="module")
def first_run(
    tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PipelineResult, StageStore, Path]:
    work = tmp_path_factory.mktemp("work")
    store = StageStore(work / "store", cache_dir=work / "cache")
    data = prepare_dataset(tiny_config(), tiny_data_dir, work / "cache")
    seen: list[str] = []
    result = run_pipeline(tiny_config(), data, store, on_stage=lambda o: seen.append(o.stage))
    assert seen == ["seed", "refine", "segment"]
    return result, store, work


def test_tiny_run_produces_every_artifact_and_metric(
    first_run: tuple[PipelineResult, StageStore, Path], tiny_data_dir: Path
) -> None:
    result, _, _ = first_run
    summary = result.summary()
    for name in ("cam_miou", "cam_miou_best", "cam_fg_precision", "cam_fg_recall", "pseudo_miou", "val_miou"):
        assert 0.0 <= summary[name] <= 1.0
    assert summary["cam_miou_best"] >= summary["cam_miou"]
    assert not any(stage["cached"] for stage in summary["stages"].values())
    data = open_dataset(tiny_data_dir, tiny_config().data)
    refine_dir = Path(summary["stages"]["refine"]["path"])
    segment_dir = Path(summary["stages"]["segment"]["path"])
    assert {p.stem for p in refine_dir.glob("*.png")} == set(data.train_ids)
    assert {p.stem for p in segment_dir.glob("*.png")} == set(data.val_ids)
    seed_dir = Path(summary["stages"]["seed"]["path"])
    assert (seed_dir / "model.pt").is_file() and (seed_dir / "cam_curve.csv").read_text().startswith(
        "threshold,miou"
    )
    assert len(result.stages["seed"].metrics["cam_curve"]["miou"]) == 101


def test_metrics_agree_with_the_pngs_on_disk(
    first_run: tuple[PipelineResult, StageStore, Path], tiny_data_dir: Path
) -> None:
    result, _, _ = first_run
    data = open_dataset(tiny_data_dir, tiny_config().data)
    pseudo = _independent_miou(result.stages["refine"].path, tiny_data_dir, data.train_ids, data.num_classes)
    val = _independent_miou(result.stages["segment"].path, tiny_data_dir, data.val_ids, data.num_classes)
    assert result.metrics()["pseudo_miou"] == pytest.approx(pseudo, abs=1e-9)
    assert result.metrics()["val_miou"] == pytest.approx(val, abs=1e-9)


def test_identical_config_reuses_every_stage(
    first_run: tuple[PipelineResult, StageStore, Path], tiny_data_dir: Path
) -> None:
    result, store, work = first_run
    data = prepare_dataset(tiny_config(), tiny_data_dir, work / "cache")
    again = run_pipeline(tiny_config(), data, store)
    assert all(outcome.cached for outcome in again.stages.values())
    assert again.metrics() == result.metrics()
    assert [o.key for o in again.stages.values()] == [o.key for o in result.stages.values()]


def test_a_reused_stage_names_the_builder_that_computed_it(tiny_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path / "cache")
    first = StageStore(tmp_path / "store", cache_dir=tmp_path / "cache-1", builder="search/trial_1")
    built = run_pipeline(cfg, data, first, until="seed").stages["seed"]
    second = StageStore(tmp_path / "store", cache_dir=tmp_path / "cache-2", builder="search/trial_2")
    again = run_pipeline(cfg, data, second, until="seed").stages["seed"]
    assert not built.cached and built.built_by == "search/trial_1"
    assert again.cached and again.built_by == "search/trial_1"
    assert again.compute_seconds == pytest.approx(built.compute_seconds, abs=1e-3)


def test_refine_knob_reruns_refine_and_segment_only(
    first_run: tuple[PipelineResult, StageStore, Path], tiny_data_dir: Path
) -> None:
    result, store, work = first_run
    cfg = tiny_config("refine.beta=4")
    changed = run_pipeline(cfg, prepare_dataset(cfg, tiny_data_dir, work / "cache"), store)
    assert [changed.stages[s].cached for s in ("seed", "refine", "segment")] == [True, False, False]
    assert changed.stages["seed"].key == result.stages["seed"].key
    assert changed.stages["refine"].key != result.stages["refine"].key


def test_runtime_settings_do_not_change_keys(
    first_run: tuple[PipelineResult, StageStore, Path], tiny_data_dir: Path
) -> None:
    _, store, work = first_run
    cfg = tiny_config("runtime.threads=2", "runtime.device=cpu")
    again = run_pipeline(cfg, prepare_dataset(cfg, tiny_data_dir, work / "cache"), store)
    assert all(outcome.cached for outcome in again.stages.values())


def test_failed_stage_publishes_nothing(
    first_run: tuple[PipelineResult, StageStore, Path], tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, store, work = first_run
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    cfg = tiny_config("refine.crf.enabled=true")
    with pytest.raises(MissingExtraError, match=r"refine\.crf\.enabled=true needs the dense CRF"):
        run_pipeline(cfg, prepare_dataset(cfg, tiny_data_dir, work / "cache"), store)
    refine_root = work / "store" / "refine"
    published = {p.parent.name for p in refine_root.glob("*/manifest.json")}
    attempts = {p.parent.name for p in refine_root.glob("*/*/") if p.is_dir()}
    assert attempts == published  # no half-built attempt was left behind


@pytest.mark.slow
def test_non_square_images_of_varied_sizes(varied_data_dir: Path, tmp_path: Path) -> None:
    store = StageStore(tmp_path / "store", cache_dir=tmp_path / "cache")
    cfg = tiny_config()
    result = run_pipeline(cfg, prepare_dataset(cfg, varied_data_dir, tmp_path / "cache"), store)
    data = open_dataset(varied_data_dir, cfg.data)
    for image_id in data.val_ids:
        pred = Image.open(result.stages["segment"].path / f"{image_id}.png")
        assert pred.size == Image.open(varied_data_dir / "JPEGImages" / f"{image_id}.jpg").size
    assert result.metrics()["val_miou"] == pytest.approx(
        _independent_miou(result.stages["segment"].path, varied_data_dir, data.val_ids, data.num_classes)
    )


@pytest.mark.slow
def test_remote_store_shared_by_two_nodes(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Two 'nodes' with separate local caches share one (in-memory) object store."""
    fs = pafs._MockFileSystem()
    cfg = tiny_config("segment.train.epochs=1", "rng_seed=5")
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path / "cache")
    first = run_pipeline(cfg, data, StageStore("bucket/wsss", cache_dir=tmp_path / "node-a", filesystem=fs))
    second = run_pipeline(cfg, data, StageStore("bucket/wsss", cache_dir=tmp_path / "node-b", filesystem=fs))
    assert not any(o.cached for o in first.stages.values()) and all(o.cached for o in second.stages.values())
    assert str(second.stages["refine"].path).startswith(str(tmp_path / "node-b"))
    assert second.metrics() == first.metrics()


def test_dense_crf_in_refine_and_segment(tiny_data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pydensecrf.densecrf")
    cfg = tiny_config("refine.crf.enabled=true", "segment.crf.enabled=true", "segment.scales=[1.0,0.75]")
    result = run_pipeline(
        cfg,
        prepare_dataset(cfg, tiny_data_dir, tmp_path / "cache"),
        StageStore(tmp_path / "s", tmp_path / "c"),
    )
    data = open_dataset(tiny_data_dir, cfg.data)
    confident = result.stages["refine"].path / "confident"
    assert {p.stem for p in confident.glob("*.png")} == set(data.train_ids)
    assert result.metrics()["val_miou"] == pytest.approx(
        _independent_miou(result.stages["segment"].path, tiny_data_dir, data.val_ids, data.num_classes)
    )


def test_concurrent_identical_runs_compute_each_stage_once(tiny_data_dir: Path, tmp_path: Path) -> None:
    """Single flight: the second run waits on the store's lock and reuses what the first one built."""
    cfg = tiny_config("rng_seed=9")
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path / "cache")
    results: list[PipelineResult] = []

    def run() -> None:
        results.append(run_pipeline(cfg, data, StageStore(tmp_path / "store", cache_dir=tmp_path / "cache")))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    for stage in ("seed", "refine", "segment"):
        attempts = [p for p in (tmp_path / "store" / stage).glob("*/*") if p.is_dir()]
        assert len(attempts) == 1, stage
        assert sorted(r.stages[stage].cached for r in results) == [False, True]
    assert results[0].metrics() == results[1].metrics()


def test_eval_split_scores_cams_and_pseudo_masks_on_its_ids_only(tiny_data_dir: Path, tmp_path: Path) -> None:
    """The VOC protocol: every stage works on the whole train split (pseudo masks for all of it),
    while CAM and pseudo-mask mIoU are measured on data.eval_split only."""
    from wsss.ops.cam import cams_to_mask
    from wsss.stages.cam_files import load_cams

    root = Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    (root / "ImageSets/Segmentation/train_small.txt").write_text("\n".join(train[:5]) + "\n")
    cfg = tiny_config("data.eval_split=train_small")
    data = prepare_dataset(cfg, root, tmp_path / "cache")
    result = run_pipeline(cfg, data, StageStore(tmp_path / "store", cache_dir=tmp_path / "cache"))
    refine_dir, seed_dir = result.stages["refine"].path, result.stages["seed"].path
    assert {p.stem for p in refine_dir.glob("*.png")} == set(train)
    assert {p.stem for p in (seed_dir / "cams").glob("*.npz")} == set(train)
    metrics = result.metrics()
    assert metrics["pseudo_miou"] == pytest.approx(
        _independent_miou(refine_dir, root, tuple(train[:5]), data.num_classes), abs=1e-9
    )
    cam_dir = tmp_path / "cam_masks"
    cam_dir.mkdir()
    for image_id in train[:5]:
        keys, cams = load_cams(seed_dir, image_id, data.image_size(image_id))
        Image.fromarray(cams_to_mask(cams, keys, cfg.seed.bg_threshold).astype(np.uint8)).save(
            cam_dir / f"{image_id}.png"
        )
    cam_miou = _independent_miou(cam_dir, root, tuple(train[:5]), data.num_classes)
    assert metrics["cam_miou"] == pytest.approx(cam_miou, abs=1e-9)
    whole = _independent_miou(refine_dir, root, tuple(train), data.num_classes)
    assert whole != pytest.approx(metrics["pseudo_miou"], abs=1e-6)  # the subset is really what counts


def test_holdout_split_is_predicted_and_scored_apart_from_val(tiny_data_dir: Path, tmp_path: Path) -> None:
    """data.holdout_split: the same DeepLab predicts the held-out images, scored as holdout_miou and
    never inside val_miou, which equals a run without them."""
    root = Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    (root / "ImageSets/Segmentation/val_a.txt").write_text("\n".join(val[:3]) + "\n")
    (root / "ImageSets/Segmentation/val_b.txt").write_text("\n".join(val[3:]) + "\n")
    store = StageStore(tmp_path / "store", cache_dir=tmp_path / "cache")
    metrics = {}
    for holdout in ("", "val_b"):
        cfg = tiny_config("data.val_split=val_a", f"data.holdout_split={holdout}")
        result = run_pipeline(cfg, prepare_dataset(cfg, root, tmp_path / "cache"), store)
        metrics[holdout] = result.metrics()
    pred = result.stages["segment"].path
    assert {p.stem for p in pred.glob("*.png")} == set(val)
    assert metrics["val_b"]["val_miou"] == pytest.approx(_independent_miou(pred, root, tuple(val[:3]), 4))
    assert metrics["val_b"]["holdout_miou"] == pytest.approx(_independent_miou(pred, root, tuple(val[3:]), 4))
    assert metrics["val_b"]["val_miou"] == metrics[""]["val_miou"] and "holdout_miou" not in metrics[""]


def test_voc12_preset_runs_on_a_voc_layout_with_train_aug(tiny_data_dir: Path, tmp_path: Path) -> None:
    """The preset's data protocol and knobs on a small VOC-style fixture: train_aug with SBD-style
    masks, train inside it with the original masks; only sizes and backbones are shrunk."""
    pytest.importorskip("pydensecrf.densecrf")
    root = Path(shutil.copytree(tiny_data_dir, tmp_path / "data"))
    shutil.copytree(root / "SegmentationClass", root / "SegmentationClassAug")
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    (root / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(train) + "\n")
    (root / "ImageSets/Segmentation/train.txt").write_text("\n".join(train[:6]) + "\n")
    small = [o for o in TINY if not o.startswith("refine.train.resize_long")]
    nets = [f"{s}.backbone.{{name: test_resnet, pretrained: false}}" for s in ("seed", "refine", "segment")]
    cfg = load_config(
        "voc12", [*small, *[n.replace(".{", "={") for n in nets], "segment.scales=[1.0]", "runtime.workers=0"]
    )
    assert cfg.seed.backbone.frozen_stages == 3 and cfg.refine.crf.enabled  # the preset's own knobs stay
    data = prepare_dataset(cfg, root, tmp_path / "cache")
    result = run_pipeline(cfg, data, StageStore(tmp_path / "store", cache_dir=tmp_path / "cache"))
    refine_dir = result.stages["refine"].path
    assert {p.stem for p in refine_dir.glob("*.png")} == set(train)  # pseudo masks for all of train_aug
    assert result.metrics()["pseudo_miou"] == pytest.approx(
        _independent_miou(refine_dir, root, tuple(train[:6]), data.num_classes), abs=1e-9
    )
