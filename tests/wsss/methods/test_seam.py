"""SEAM's parts that are easy to get wrong, each against a hand computation."""

from __future__ import annotations

import pytest
import torch

from wsss.config import BackboneConfig
from wsss.config_load import load_config
from wsss.errors import ConfigError
from wsss.methods._equivariance import equivariant_regularisation, min_pool_loss, ohem
from wsss.methods.base import Batch
from wsss.methods.seam import METHOD, SeamConfig
from wsss.models.seam import SeamNet, keep_max_foreground, pcm_affinity, seed_norm, with_background


def test_pcm_affinity_columns_sum_to_one_and_are_non_negative() -> None:
    torch.manual_seed(0)
    affinity = pcm_affinity(torch.randn(2, 16, 5, 7))
    assert affinity.shape == (2, 35, 35) and float(affinity.min()) >= 0
    assert torch.allclose(affinity.sum(dim=1), torch.ones(2, 35), atol=1e-4)
    # Cosine similarity of a pixel with itself is 1: the diagonal is every column's largest entry.
    assert torch.equal(affinity.argmax(dim=1), torch.arange(35).expand(2, 35))


def test_refined_cams_are_seeds_propagated_by_the_affinity() -> None:
    """refined = y_d A with y_d = keep_max_foreground(with_background(seed_norm(cam))), no gradient."""
    torch.manual_seed(0)
    model = SeamNet(BackboneConfig(name="test_resnet"), num_classes=3).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        cam, refined = model(x)
        feats = model.backbone(x)
        affinity = pcm_affinity(model.embed(model.pcm_features(x, feats)))
        seeds = keep_max_foreground(with_background(seed_norm(cam)))
    assert cam.shape == refined.shape == (1, 4, 6, 8)
    assert torch.allclose(refined, (seeds.flatten(2) @ affinity).view_as(cam), atol=1e-5)


def test_max_onehot_keeps_the_background_and_the_top_foreground_channel() -> None:
    maps = torch.tensor([[0.9, 0.1], [0.2, 0.6], [0.5, 0.3], [0.1, 0.6]]).view(1, 4, 1, 2)
    kept = keep_max_foreground(maps).view(4, 2)
    expected = torch.tensor([[0.9, 0.1], [0.0, 0.6], [0.5, 0.0], [0.0, 0.6]])  # ties keep both
    assert torch.equal(kept, expected)
    assert torch.allclose(with_background(maps).view(4, 2)[0], torch.tensor([1 - 0.5, 1 - 0.6]))


def test_er_is_zero_when_the_views_agree_and_l1_otherwise() -> None:
    first = torch.rand(2, 4, 6, 6)
    assert float(equivariant_regularisation(first, first.clone())) == 0
    shifted = first.clone()
    shifted[:, 1:] += 0.25
    shifted[:, 0] += 5  # the background channel is not compared
    assert abs(float(equivariant_regularisation(first, shifted)) - 0.25) < 1e-6


def test_ohem_keeps_exactly_the_top_fraction() -> None:
    errors = torch.arange(100, dtype=torch.float32).view(1, 4, 5, 5)  # 0..99
    assert float(ohem(errors, 0.2)) == sum(range(80, 100)) / 20  # the 20 largest of 100
    both = torch.stack([errors[0], errors[0] * 0]).view(2, 4, 5, 5)
    assert float(ohem(both, 0.1)) == (sum(range(90, 100)) / 10 + 0) / 2  # per image, then the mean


def test_min_pool_loss_averages_the_lowest_quarter_after_relu() -> None:
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0] = torch.arange(16, dtype=torch.float32).view(4, 4) - 2  # -2 .. 13
    # Per-pixel max over channels: max(v, 0) -> lowest 4 pixels: 0, 0, 0, 1 (v = -2, -1, 0, 1).
    assert float(min_pool_loss(maps)) == 0.25


def test_inference_normalisation_is_seams_min_max() -> None:
    total = torch.tensor([[[-1.0, 2.0], [4.0, 6.0]]])
    out = METHOD.normalise(total, SeamConfig())
    expected = (torch.tensor([0.0, 2.0, 4.0, 6.0]) - 1e-5) / (6 + 1e-5)
    assert torch.allclose(out.flatten(), expected.clamp(min=0), atol=1e-6)


def test_loss_parts_and_weights() -> None:
    torch.manual_seed(0)
    model = SeamNet(BackboneConfig(name="test_resnet"), num_classes=3)
    images, labels = torch.randn(2, 3, 48, 48), torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    torch.manual_seed(1)
    total, parts = METHOD.loss(model, Batch(images, labels), SeamConfig())
    assert set(parts) == {"cls", "minpool", "er", "ecr"} and all(v >= 0 for v in parts.values())
    assert abs(float(total.detach()) - sum(parts.values())) < 1e-4
    torch.manual_seed(1)
    heavier, _ = METHOD.loss(model, Batch(images, labels), SeamConfig(weight_er=3.0, weight_ecr=0.0))
    expected = parts["cls"] + parts["minpool"] + 3 * parts["er"]
    assert abs(float(heavier.detach()) - expected) < 1e-4


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed.params.rescale=1.5", r"seed\.params\.rescale: must be within \[0\.1, 0\.9\]"),
        ("seed.params.ohem=0", r"seed\.params\.ohem: must be within \(0, 1\]"),
        ("seed.params.weight_er=-1", r"seed\.params\.weight_er: must be >= 0"),
    ],
)
def test_bad_params_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["seed.method=seam", override])


def test_inference_reads_the_refined_cams_or_with_cams_raw_the_classifiers_own() -> None:
    torch.manual_seed(0)
    model = SeamNet(BackboneConfig(name="test_resnet"), num_classes=3).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        cam, refined = model(x)
        assert torch.equal(METHOD.cams(model, x, SeamConfig()), refined[:, 1:])
        assert torch.equal(METHOD.cams(model, x, SeamConfig(cams="raw")), cam[:, 1:])
