from __future__ import annotations

import pytest
import torch

from wsss.config import BackboneConfig
from wsss.errors import ConfigError
from wsss.methods._mixing import concentration, entropy, mixed_bce
from wsss.methods.manifold_mixup import METHOD as MANIFOLD
from wsss.methods.manifold_mixup import ManifoldMixupConfig
from wsss.models.cam import CamNet


def test_entropy_is_on_predictions_and_has_gradients() -> None:
    logits = torch.zeros(2, 3, requires_grad=True)
    value = entropy(logits)
    assert value.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-4)  # p = 0.5 is maximal
    value.backward()
    assert logits.grad is not None
    confident = entropy(torch.full((2, 3), 8.0))
    assert confident < 0.01


@pytest.mark.parametrize(("h", "w"), [(8, 8), (4, 16), (16, 4)])
def test_concentration_is_the_spatial_variance_on_any_aspect_ratio(h: int, w: int) -> None:
    """A single hot pixel has ~no variance; a flat map has the variance of a uniform grid along each axis,
    computed per axis (SCOPS' code swaps the axes of non-square maps)."""
    labels = torch.tensor([[1.0, 0.0]])
    hot = torch.zeros(1, 2, h, w)
    hot[0, 1] = 40.0  # the other class owns every pixel (the softmax is over classes)...
    hot[0, 0, h // 2, w // 3], hot[0, 1, h // 2, w // 3] = 40.0, 0.0  # ...but one
    assert concentration(hot, labels) < 0.05
    flat = torch.zeros(1, 2, h, w)
    xs = torch.arange(w) / w * 2 - 1
    ys = torch.arange(h) / h * 2 - 1
    expected = xs.var(unbiased=False) + ys.var(unbiased=False)
    assert concentration(flat, labels) == pytest.approx(expected.item(), rel=1e-4)
    assert concentration(flat, torch.zeros(1, 2)) == 0  # only present classes count


def test_mixed_bce_interpolates_the_two_label_losses() -> None:
    logits = torch.tensor([[2.0, -1.0]])
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert mixed_bce(logits, a, b, 1.0) == pytest.approx(mixed_bce(logits, a, a, 0.3).item())
    middle = mixed_bce(logits, a, b, 0.5)
    assert middle == pytest.approx(0.5 * (mixed_bce(logits, a, a, 1.0) + mixed_bce(logits, b, b, 1.0)).item())


def test_manifold_layers_must_exist_in_the_backbone() -> None:
    model = CamNet(BackboneConfig(name="test_resnet"), num_classes=2)
    MANIFOLD.check(ManifoldMixupConfig(layers=(0, 5)), model)
    with pytest.raises(
        ConfigError, match=r"seed\.params\.layers: \[0, 6\] reaches past this backbone's stages 0\.\.5"
    ):
        MANIFOLD.check(ManifoldMixupConfig(layers=(0, 6)), model)
