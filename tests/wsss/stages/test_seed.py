from __future__ import annotations

import numpy as np
import torch

from wsss.config import BackboneConfig
from wsss.models.cam import CamNet
from wsss.ops.cam import multiscale_cams


def test_multiscale_cams_are_restricted_to_labels_and_max_normalised() -> None:
    torch.manual_seed(0)
    model = CamNet(BackboneConfig(name="test_resnet"), num_classes=5).eval()
    with torch.no_grad():
        model.classifier.weight.abs_()  # post-ReLU features and positive weights: every class fires
        model.classifier.weight[3] *= 100  # normalisation is per class, whatever the scale
    image = torch.randn(3, 40, 56)
    cams = multiscale_cams(model, image, np.array([1, 3]), (1.0, 0.5, 1.5), True, torch.device("cpu"))
    assert cams.shape == (2, 40, 56)
    assert cams.min() >= 0 and torch.allclose(cams.amax(dim=(1, 2)), torch.ones(2), atol=1e-3)


def test_flip_inference_is_flip_equivariant() -> None:
    torch.manual_seed(0)
    model = CamNet(BackboneConfig(name="test_resnet"), num_classes=2).eval()
    image = torch.randn(3, 32, 48)
    keys = np.array([0, 1])
    a = multiscale_cams(model, image, keys, (1.0,), True, torch.device("cpu"))
    b = multiscale_cams(model, image.flip(-1), keys, (1.0,), True, torch.device("cpu"))
    assert torch.allclose(a, b.flip(-1), atol=1e-5)
