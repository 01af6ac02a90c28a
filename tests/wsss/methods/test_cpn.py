"""CPN's parts that are easy to get wrong: complementary grid masks, the PRCM, and the loss terms
against a slow per-image reference computation written from CPN's `train_cpn.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.config import BackboneConfig, load_config
from wsss.errors import ConfigError
from wsss.methods.cpn import METHOD, CpnConfig, grid_masks, max_onehot_all
from wsss.methods.seam import views
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
    ],
)
def test_bad_params_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["seed.method=cpn", override])
