from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import tiny_config
from wsss.config import RefineConfig, TrainConfig
from wsss.data.classes import IGNORE_INDEX, write_mask
from wsss.data.torchsets import PAIR_BASE, LabelPairSet, split_pair
from wsss.data.transforms import TrainTransform
from wsss.data.voc import open_dataset
from wsss.pipeline import prepare_dataset, run_pipeline
from wsss.stages.confident import combine_two_sided, confident_labels
from wsss.stages.refine import affinity_loss, grid_labels
from wsss.store import StageStore


def test_confident_labels_follow_psa_thresholds() -> None:
    """fg iff m > (1-m)^4 (m* = 0.276); bg iff m < (1-m)^32 (m* = 0.077); ignore in between."""
    cams = np.array([[[0.9, 0.3, 0.2, 0.05, 0.0]], [[0.1, 0.0, 0.0, 0.0, 0.0]]], np.float32)  # (2, 1, 5)
    keys = np.array([2, 5])
    labels = confident_labels(cams, keys, RefineConfig(alpha_low=4, alpha_high=32))
    assert labels.tolist() == [[3, 3, IGNORE_INDEX, 0, 0]]


def test_confident_labels_pick_the_top_class() -> None:
    cams = np.array([[[0.9, 0.4]], [[0.5, 0.8]]], np.float32)
    assert confident_labels(cams, np.array([0, 1]), RefineConfig()).tolist() == [[1, 2]]


def _edge_labels() -> torch.Tensor:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :, 4:] = 2
    labels[0, 0, 0] = IGNORE_INDEX
    labels[0, 4, 5] = 1  # one stray pixel makes its cell impure
    labels[0, 4:6, 0:4] = IGNORE_INDEX  # a cell half ignored, half background
    labels[0, 6, 0] = IGNORE_INDEX
    return labels


def test_grid_labels_pure_rule_keeps_only_pure_cells() -> None:
    grid = grid_labels(_edge_labels(), (2, 2), num_classes=3, rule="pure")
    assert grid.tolist() == [[[IGNORE_INDEX, 2], [IGNORE_INDEX, IGNORE_INDEX]]]


def test_grid_labels_majority_rule_is_psas_pooled_argmax() -> None:
    """psa: AvgPool2d(8) over the label scores, then argmax per cell; mixed cells keep their majority,
    a cell mostly ignored stays ignored."""
    grid = grid_labels(_edge_labels(), (2, 2), num_classes=3)
    assert grid.tolist() == [[[0, 2], [IGNORE_INDEX, 2]]]


def _psa_cell() -> tuple[torch.Tensor, torch.Tensor]:
    """One 10-pixel cell: low alpha says class 1 on 4 pixels, background on 6; high alpha says
    background on 3 of those 6. Combined per pixel: 4 x class 1, 3 x background, 3 x ignore."""
    low = torch.tensor([[[1, 1, 1, 1, 0, 0, 0, 0, 0, 0]]])
    high = torch.tensor([[[1, 1, 1, 1, 0, 0, 0, 1, 1, 1]]])
    return low, high


def test_psa_grid_labels_pool_the_two_maps_apart() -> None:
    """psa's cell: low-alpha argmax background -> ignore; high-alpha argmax class 1 -> not background:
    the cell is ignored. The majority rule over the combined map calls it class 1 (4 of 10 pixels)."""
    low, high = _psa_cell()
    combined = torch.from_numpy(combine_two_sided(low.numpy(), high.numpy())).long()
    assert sorted(combined.flatten().tolist()) == [0] * 3 + [1] * 4 + [IGNORE_INDEX] * 3
    assert grid_labels(combined, (1, 1), 2).item() == 1
    assert grid_labels(low * PAIR_BASE + high, (1, 1), 2, rule="psa").item() == IGNORE_INDEX
    # background wins where the high-alpha cell's argmax is background, even over low-alpha class 1
    assert (
        grid_labels(torch.ones_like(low) * PAIR_BASE + torch.zeros_like(high), (1, 1), 2, rule="psa").item()
        == 0
    )


def test_psa_grid_labels_ignore_cells_outside_the_image() -> None:
    """Padding (255 in both maps after the crop) has no score in psa: such a cell is ignored, and a
    half-padded cell is decided by its pixels inside the image."""
    low = torch.tensor([[[0, 0, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX] * 4]])
    pairs = low * PAIR_BASE + low
    assert grid_labels(pairs, (1, 2), 2, rule="psa").tolist() == [[[0, IGNORE_INDEX]]]


def test_label_pair_set_crops_both_maps_alike(tiny_data_dir: Path, tmp_path: Path) -> None:
    data = open_dataset(tiny_data_dir, tiny_config().data)
    image_id = data.train_ids[0]
    height, width = data.read_image(image_id).shape[:2]
    low = (np.arange(height * width).reshape(height, width) % 3).astype(np.uint8)
    high = ((low + 1) % 3).astype(np.uint8)
    write_mask(tmp_path / "low.png", low)
    write_mask(tmp_path / "high.png", high)
    crop = TrainConfig(crop_size=height + 16, random_rescale=False, hflip=True)
    pairs = LabelPairSet(
        data, [image_id], lambda i: (tmp_path / "low.png", tmp_path / "high.png"), TrainTransform(crop)
    )
    _, pair = pairs[0]
    first, second = split_pair(pair)
    inside = first != IGNORE_INDEX
    assert inside.sum() == height * width and (second[~inside] == IGNORE_INDEX).all()
    assert torch.equal(second[inside], (first[inside] + 1) % 3)


def test_psa_rule_runs_the_refine_stage(tiny_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config("refine.grid_labels=psa")
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path / "cache")
    result = run_pipeline(
        cfg, data, StageStore(tmp_path / "store", cache_dir=tmp_path / "cache"), until="refine"
    )
    confident = result.stages["refine"].path / "confident"
    ids = set(data.train_ids)
    assert (
        {p.stem for p in (confident / "low").glob("*.png")}
        == ids
        == {p.stem for p in (confident / "high").glob("*.png")}
    )
    assert 0 <= result.metrics()["pseudo_miou"] <= 1


@pytest.mark.parametrize("pair_origins", ["all", "psa"])
def test_affinity_loss_rewards_separating_different_labels(pair_origins: str) -> None:
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, :, 3:] = 1
    # nearly identical features everywhere (exactly identical ones would give |x|'s zero subgradient)
    together = (0.01 * torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(0))).requires_grad_()
    apart = torch.zeros(1, 4, 6, 6)
    apart[:, :, :, 3:] = 10.0
    loss_together, parts = affinity_loss(together, labels, radius=3, pair_origins=pair_origins)
    loss_apart, _ = affinity_loss(apart, labels, radius=3, pair_origins=pair_origins)
    assert loss_apart < 0.01 < loss_together
    assert parts["fg"] < 0.02 and parts["neg"] > 3  # affinity ~1 between pairs that should be ~0
    loss_together.backward()
    assert together.grad is not None and together.grad.abs().sum() > 0


def test_affinity_loss_is_psa_equation_pair_by_pair() -> None:
    """The masked on-device sums give eq. 4-6 computed over an explicit list of pairs (radius 3,
    every origin), with ignored pixels in no pair."""
    rng = np.random.default_rng(0)
    embedding = torch.from_numpy(rng.normal(size=(2, 3, 5, 6)).astype(np.float32))
    labels = torch.from_numpy(rng.choice([0, 0, 1, 2, IGNORE_INDEX], size=(2, 5, 6)))
    terms: dict[str, list[float]] = {"bg": [], "fg": [], "neg": []}
    # psa's one-directional offsets within radius 3: right on the row, any dx on the rows below
    offsets = [(0, 1), (0, 2)] + [(dy, dx) for dy in (1, 2) for dx in range(-2, 3) if dy * dy + dx * dx < 9]
    f, lab = embedding.double().numpy(), labels.numpy()
    for b in range(2):
        for y in range(5):
            for x in range(6):
                for dy, dx in offsets:
                    v, u = y + dy, x + dx
                    if not (v < 5 and 0 <= u < 6) or IGNORE_INDEX in (lab[b, y, x], lab[b, v, u]):
                        continue
                    a = np.exp(-np.abs(f[b, :, y, x] - f[b, :, v, u]).mean())
                    if lab[b, y, x] != lab[b, v, u]:
                        terms["neg"].append(-np.log(1 + 1e-5 - a))
                    else:
                        terms["bg" if lab[b, y, x] == 0 else "fg"].append(-np.log(a + 1e-5))
    means = {k: sum(v) / (len(v) + 1e-5) for k, v in terms.items()}
    loss, parts = affinity_loss(embedding, labels, radius=3)
    assert all(terms.values())
    assert parts == pytest.approx(means, rel=1e-5)
    assert float(loss) == pytest.approx(means["bg"] / 4 + means["fg"] / 4 + means["neg"] / 2, rel=1e-5)


def test_confident_labels_with_the_crf_are_the_same_on_a_process_pool(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    """The CRF step fans images out over runtime.threads processes: the labels and their metrics are
    those of one process, file for file."""
    pytest.importorskip("pydensecrf.densecrf")
    import torch

    from wsss.runtime import Runtime
    from wsss.stages.confident import write_confident_labels

    cfg = tiny_config("refine.crf.enabled=true", "refine.grid_labels=psa")
    data = prepare_dataset(cfg, tiny_data_dir, tmp_path / "cache")
    store = StageStore(tmp_path / "store", cache_dir=tmp_path / "cache")
    outcomes: list = []
    run_pipeline(cfg, data, store, until="seed", on_stage=outcomes.append)
    seed_dir = store.lookup("seed", outcomes[0].key).path
    folders = {}
    for threads in (1, 2):
        folders[threads] = tmp_path / f"labels-{threads}"
        runtime = Runtime(torch.device("cpu"), progress=False, threads=threads)
        write_confident_labels(cfg.refine, data, seed_dir, folders[threads], runtime)
    files = sorted(p.relative_to(folders[1]) for p in folders[1].rglob("*") if p.is_file())
    assert len(files) == 3 * len(data.train_ids) + 1  # labels, low and high maps, metrics.json
    for name in files:
        assert (folders[2] / name).read_bytes() == (folders[1] / name).read_bytes(), name
