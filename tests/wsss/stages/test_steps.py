"""Sub-stage keys (issue 24 item 1): a knob recomputes only the steps that depend on it. The seed
stage's classifier is a cached step keyed without the CAM inference knobs; refine's confident labels
and its AffinityNet are cached steps, so the walk's knobs retrain nothing. A result built from cached
steps is the result built from scratch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.helpers import tiny_config
from wsss.pipeline import prepare_dataset, run_pipeline
from wsss.store import StageStore


def _entries(store: Path, stage: str) -> set[str]:
    return {p.name for p in (store / stage).glob("*") if p.is_dir()}


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_a_knob_recomputes_only_the_steps_that_depend_on_it(tiny_data_dir: Path, tmp_path: Path) -> None:
    data = prepare_dataset(tiny_config(), tiny_data_dir, tmp_path / "cache")
    root = tmp_path / "store"
    store = StageStore(root, tmp_path / "cache" / "store")

    def run(*overrides: str) -> dict:
        return run_pipeline(tiny_config(*overrides), data, store, until="refine").stages

    run()
    assert len(_entries(root, "seed_round")) == 1  # the classifier
    assert len(_entries(root, "refine_step")) == 2  # confident labels, AffinityNet
    steps = _entries(root, "refine_step")

    walked = run("refine.beta=4.0", "refine.logt=3", "refine.rw_alpha=16.0")  # the walk's knobs
    assert walked["seed"].cached and not walked["refine"].cached
    assert _entries(root, "refine_step") == steps  # nothing relabelled, nothing retrained

    run("refine.train.lr=0.05")  # AffinityNet's training: the labels are reused
    assert len(_entries(root, "refine_step")) == 3 and steps < _entries(root, "refine_step")

    rescaled = run("seed.scales=[1.0]")  # CAM inference: the classifier is reused
    assert not rescaled["seed"].cached and len(_entries(root, "seed_round")) == 1
    assert len(_entries(root, "refine_step")) == 5  # new CAMs: new labels, a new AffinityNet

    # The walk over cached steps gives what a store that never saw the first run gives.
    fresh_root = tmp_path / "fresh"
    fresh = run_pipeline(
        tiny_config("refine.beta=4.0", "refine.logt=3", "refine.rw_alpha=16.0"),
        data,
        StageStore(fresh_root, tmp_path / "cache" / "fresh"),
        until="refine",
    ).stages
    assert fresh["refine"].key == walked["refine"].key
    assert fresh["refine"].metrics["pseudo_miou"] == walked["refine"].metrics["pseudo_miou"]
    masks, fresh_masks = _masks(walked["refine"].path), _masks(fresh["refine"].path)
    assert masks.keys() == fresh_masks.keys() and all(np.array_equal(masks[k], fresh_masks[k]) for k in masks)
