"""CPN's parts that are easy to get wrong: complementary grid masks, the PRCM, and the loss terms
against a slow per-image reference computation written from CPN's `train_cpn.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from wsss.config import BackboneConfig, DataConfig, TrainConfig
from wsss.config_load import load_config
from wsss.data.image_maps import CachedMaps, ImageMaps, slic_labels
from wsss.data.torchsets import ClassificationSet
from wsss.data.transforms import TrainTransform
from wsss.data.voc import open_dataset
from wsss.errors import ConfigError
from wsss.methods._equivariance import views
from wsss.methods.cpn import METHOD, CpnConfig, grid_masks, max_onehot_all, superpixel_count, superpixel_masks
from wsss.models.cpn import CpnNet
from wsss.models.seam import keep_max_foreground, seed_norm, with_background

CPU = torch.device("cpu")


def test_grid_masks_are_cell_blocks_hiding_about_p_h_of_the_cells() -> None:
    torch.manual_seed(0)
    keep, kept = grid_masks(400, (48, 48), (4,), 0.3, CPU)
    assert keep.shape == (400, 1, 48, 48) and set(keep.unique().tolist()) <= {0.0, 1.0}
    blocks = keep[:, 0].view(400, 4, 12, 4, 12)
    assert torch.equal(blocks.amin(dim=(2, 4)), blocks.amax(dim=(2, 4)))  # each 12 px cell is uniform
    assert torch.allclose(kept, keep.mean(dim=(1, 2, 3)))  # equal cells: kept cells = kept pixels
    assert abs(float(1 - kept.mean()) - 0.3) < 0.02  # about p_h of the cells hidden
    # I1 = I*M and I2 = I*(1 - M) are complementary: every pixel is in exactly one of them.
    images = torch.randn(400, 3, 48, 48)
    assert torch.equal(images * keep + images * (1 - keep), images)


def test_grid_masks_draw_the_cell_count_per_image_from_the_patch_set() -> None:
    torch.manual_seed(0)
    keep, kept = grid_masks(300, (40, 40), (1, 2), 0.5, CPU)
    single = keep.amin(dim=(1, 2, 3)) == keep.amax(dim=(1, 2, 3))
    # One cell: the whole crop kept or hidden (kept 0 or 1); two per side: quarters (kept in 0..1 by 1/4).
    assert single.float().mean() > 0.5  # 1 cell always uniform, 2x2 sometimes by chance (1/8)
    assert set((kept * 4).round().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert ((kept > 0) & (kept < 1)).any() and ((kept == 0) | (kept == 1)).any()


def test_max_onehot_over_all_channels_includes_the_background() -> None:
    maps = torch.tensor([[0.7, 0.1], [0.2, 0.6], [0.5, 0.3]]).view(1, 3, 1, 2)
    assert torch.equal(max_onehot_all(maps).view(3, 2), torch.tensor([[0.7, 0.0], [0.0, 0.6], [0.0, 0.0]]))


def test_prcm_maps_are_distributions_over_pixels_and_the_reference_reshape_differs() -> None:
    torch.manual_seed(0)
    model = CpnNet(BackboneConfig(name="test_resnet"), num_classes=3).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        feats = model.backbone(x)
        seeds = keep_max_foreground(with_background(seed_norm(model.classifier(feats[-1]))))
        features = model.pcm_features(x, feats)
        embedding = model.embed(features)
        maps = model.prcm(features, embedding, seeds)
        model.reference_reshape = True
        quirky = model.prcm(features, embedding, seeds)
    assert maps.shape == (2, 4, 6, 8)
    assert torch.allclose(maps.flatten(2).sum(-1), torch.ones(2, 4), atol=1e-5)
    assert not torch.allclose(maps, quirky)


def _slow_parts(model: CpnNet, images: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, frac: float):
    """CPN's loss terms image by image, channel by channel, in NumPy (train_cpn.py's formulas)."""
    with torch.no_grad():
        outs = [
            [t.numpy().astype(np.float64) for t in views(model, x)]
            for x in (images, images * keep, images * (1 - keep))
        ]
    lab = labels.numpy().astype(np.float64)
    n, k1 = lab.shape[0], lab.shape[1] + 1
    present = np.concatenate([np.ones((n, 1)), lab], 1)
    kept = keep.numpy().mean(axis=(1, 2, 3))

    def norm(m: np.ndarray) -> np.ndarray:  # SEAM/CPN max_norm, one (image, channel) at a time
        out = np.zeros_like(m)
        for b in range(m.shape[0]):
            for c in range(m.shape[1]):
                p = np.maximum(m[b, c], 0)
                out[b, c] = np.maximum(p - p.min() - 1e-5, 0) / (p.max() - p.min() + 1e-5)
        return out

    def bce(logits: np.ndarray) -> float:
        return float(
            np.mean(
                [
                    np.mean(-(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z)))))
                    for z, y in zip(logits, lab, strict=True)
                ]
            )
        )

    cls = np.mean([bce(cam[:, 1:].mean(axis=(2, 3))) for cam, _ in outs])
    minpools = []
    for _, refined in outs:
        lowest = np.sort((refined * present[:, :, None, None])[:, 1:].max(axis=1).reshape(n, -1), axis=1)
        q = lowest.shape[1] // 4
        minpools.append(np.mean(np.maximum(lowest[:, :q], 0)))
    weights = [np.ones(n), kept, 1 - kept]
    cams = [
        w[:, None, None, None] * norm(c) * present[:, :, None, None]
        for w, (c, _) in zip(weights, outs, strict=True)
    ]
    refs = [
        w[:, None, None, None] * norm(r) * present[:, :, None, None]
        for w, (_, r) in zip(weights, outs, strict=True)
    ]
    tcp = np.mean(np.abs(cams[1][:, 1:] + cams[2][:, 1:] - cams[0][:, 1:])) + np.mean(
        np.abs(refs[0][:, 1:] - refs[1][:, 1:] - refs[2][:, 1:])
    )
    for maps in (*cams, *refs):
        maps[:, 0] = 1 - maps[:, 1:].max(axis=1)

    def onehot(m: np.ndarray) -> np.ndarray:
        return np.where(m == m.max(axis=1, keepdims=True), m, 0)

    def top(err: np.ndarray) -> float:
        flat = np.sort(err.reshape(n, -1), axis=1)[:, ::-1]
        return float(np.mean(flat[:, : int(flat.shape[1] * frac)]))

    cpcr = top(np.abs(onehot(cams[0] - cams[1]) - refs[2])) + top(np.abs(onehot(cams[0] - cams[2]) - refs[1]))
    assert k1 == cams[0].shape[1]
    return {"cls": cls, "minpool": np.mean(minpools), "tcp": tcp, "cpcr": cpcr}


def test_loss_terms_match_a_slow_reference_computation() -> None:
    torch.manual_seed(0)
    model = CpnNet(BackboneConfig(name="test_resnet"), num_classes=3).eval()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    keep, kept = grid_masks(2, (32, 32), (2,), 0.5, CPU)
    params = CpnConfig(ohem=0.2)
    total, parts = METHOD.pair_loss(model, images, labels, keep, kept, params)
    slow = _slow_parts(model, images, labels, keep, 0.2)
    for name, value in slow.items():
        assert parts[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert float(total.detach()) == pytest.approx(sum(slow.values()), rel=1e-4)


def test_inference_halves_the_min_max_cams_by_default() -> None:
    total = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])
    halved = METHOD.normalise(total, CpnConfig())
    full = METHOD.normalise(total, CpnConfig(halve_cams=False))
    assert torch.allclose(halved * 2, full) and float(full.max()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed.params.grid_cells=[0, 2]", r"grid_cells: .*a count below 1 is a cell larger than the crop"),
        ("seed.params.grid_cells=[]", r"seed\.params\.grid_cells: need 1\+ cell counts"),
        ("seed.params.hide=1.0", r"seed\.params\.hide: p_h must be within \(0, 1\)"),
        ("seed.params.hide=0", r"seed\.params\.hide: p_h must be within \(0, 1\)"),
        ("seed.params.ohem=1.5", r"seed\.params\.ohem: must be within \(0, 1\]"),
        ("seed.params.weight_tcp=-1", r"seed\.params\.weight_tcp: must be >= 0"),
        ("seed.params.superpixels=1", r"seed\.params\.superpixels: S_N must be within 2\.\.5000"),
        ("seed.params.strategy=cells", r"seed\.params\.strategy"),
    ],
)
def test_bad_params_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["seed.method=cpn", override])


def _blocks(batch: int, size: int, cell: int) -> torch.Tensor:
    """Square superpixels of `cell` px: ids 0..(size/cell)^2 - 1, the same layout in every image."""
    index = torch.arange(size) // cell
    ids = index[:, None] * (size // cell) + index[None, :]
    return ids.expand(batch, size, size).clone()


def test_superpixel_masks_follow_segments_and_hide_about_39_percent_of_them() -> None:
    torch.manual_seed(0)
    spx = _blocks(500, 40, 4)  # 100 superpixels per crop -> 50 drawn with replacement
    keep, kept = superpixel_masks(spx)
    flat_ids, flat_keep = spx.flatten(1), keep.flatten(1)
    per_segment = {
        how: torch.zeros(500, 100).scatter_reduce(1, flat_ids, flat_keep, how, include_self=False)
        for how in ("amin", "amax")
    }
    per_segment, per_segment_max = per_segment["amin"], per_segment["amax"]
    assert torch.equal(per_segment, per_segment_max)  # every superpixel is kept or hidden whole
    hidden = 1 - per_segment_max.mean(1)
    expected = 1 - (1 - 1 / 100) ** 50  # floor((S + 1) / 2) = 50 draws with replacement: 0.395
    assert abs(float(hidden.mean()) - expected) < 0.01 and float(hidden.max()) <= 0.5
    assert torch.allclose(kept, keep.mean(dim=(1, 2, 3)))  # equal-size segments: pixels = segments


def test_superpixel_masks_keep_what_lies_outside_the_image() -> None:
    torch.manual_seed(0)
    spx = _blocks(50, 16, 4)
    spx[:, :, 12:] = -1  # padding after the crop: id -1
    keep, _ = superpixel_masks(spx)
    assert bool((keep[:, 0, :, 12:] == 1).all())
    assert bool((keep[:, 0, :, :12] == 0).any())


def test_superpixel_maps_are_slic_segments_following_image_edges() -> None:
    """SLIC on an image of two flat halves never puts a superpixel across the edge."""
    image = np.zeros((64, 96, 3), np.uint8)
    image[:, 48:] = (200, 40, 40)
    labels = slic_labels(image, 12, 10.0)
    assert labels.shape == (64, 96) and labels.dtype == np.int16
    left, right = set(np.unique(labels[:, :48]).tolist()), set(np.unique(labels[:, 48:]).tolist())
    assert not left & right and len(left | right) >= 4


def test_cached_maps_are_computed_once_and_recomputed_when_damaged(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    data = open_dataset(tiny_data_dir, DataConfig(), tmp_path)
    calls: list[int] = []

    def compute(image: np.ndarray) -> np.ndarray:
        calls.append(1)
        return slic_labels(image, 20, 10.0)

    spec = ImageMaps("slic-test", compute)
    first = CachedMaps(data, spec, data.train_ids, tmp_path, 2)
    assert len(calls) == len(data.train_ids)
    again = CachedMaps(data, spec, data.train_ids, tmp_path, 2)
    assert len(calls) == len(data.train_ids)  # read back, not recomputed
    image_id = data.train_ids[0]
    assert np.array_equal(first(image_id), again(image_id))
    path = tmp_path / "image_maps" / f"{data.fingerprint}-slic-test" / f"{image_id}.npy"
    np.save(path, np.zeros((3, 3), np.int16))  # wrong shape: damaged
    assert (
        again(image_id).shape == data.read_image(image_id).shape[:2] and len(calls) == len(data.train_ids) + 1
    )
    path.write_bytes(b"\x93NUMPY garbage")
    CachedMaps(data, spec, data.train_ids, tmp_path, 1)
    assert len(calls) == len(data.train_ids) + 2


def test_superpixel_maps_are_augmented_with_the_image(tiny_data_dir: Path, tmp_path: Path) -> None:
    """The batch's map is the image's SLIC map cropped, flipped and resized like the image: where an
    image is smaller than the crop, the map is -1 outside it."""
    cfg = load_config(None, ["seed.method=cpn", "seed.train.crop_size=80", "seed.train.resize_long=[64,64]"])
    data = open_dataset(tiny_data_dir, DataConfig(), tmp_path)
    spec = METHOD.image_maps(cfg.seed.params, cfg.seed.train, cfg.seed.backbone.output_stride)
    assert spec is not None and spec.key == "slic-300-10-stride8-64-64"
    maps = CachedMaps(data, spec, data.train_ids, tmp_path, 1)
    dataset = ClassificationSet(data, data.train_ids, TrainTransform(cfg.seed.train), maps, spec.fill)
    torch.manual_seed(0)
    image, labels, spx = dataset[0]
    assert image.shape == (3, 80, 80) and spx.shape == (80, 80) and labels.shape == (3,)
    inside = spx >= 0
    assert int(inside.sum()) == 64 * 64  # the 64 px image inside the 80 px crop, padding -1
    assert set(spx[inside].unique().tolist()) <= set(np.unique(maps(data.train_ids[0])).tolist())


@pytest.mark.parametrize(
    ("side", "stride", "expected"),
    [(448, 8, 300), (112, 8, 19), (224, 16, 19), (224, 8, 75), (896, 16, 300)],  # 300 (side/stride)^2/56^2
)
def test_a_superpixel_covers_as_many_feature_cells_as_on_cpns_crops(
    side: int, stride: int, expected: int
) -> None:
    """S_N 300 on CPN's 448 px crops at stride 8 makes superpixels of 10.5 feature cells; on a 112 px
    crop at stride 8 the same S_N per crop would make them 0.65 of a cell (methods-review 8.6)."""
    train = TrainConfig(crop_size=side, random_rescale=False)
    assert superpixel_count(300, train, stride, (side, side)) == expected
    rescaled = TrainConfig(crop_size=side, resize_long=(side, 3 * side))  # the mean rescale doubles it
    assert superpixel_count(300, rescaled, stride, (side, side)) == round(
        4 * 300 * side**2 / (56 * stride) ** 2
    )


def test_superpixels_cover_the_same_feature_cells_on_small_crops() -> None:
    """What SLIC makes of it on a photo: feature cells per superpixel on a 112 px crop within a factor
    of 2 of those on a 448 px crop (the count per crop alone made them 16x smaller)."""
    photo = skimage.data.astronaut()
    cells = []
    for side in (448, 112):
        image = np.asarray(Image.fromarray(photo).resize((side, side)))
        spec = METHOD.image_maps(
            CpnConfig(superpixels=300), TrainConfig(crop_size=side, random_rescale=False), 8
        )
        assert spec is not None
        cells.append((side / 8) ** 2 / len(np.unique(spec.compute(image))))
    assert 0.5 < cells[1] / cells[0] < 2, cells
