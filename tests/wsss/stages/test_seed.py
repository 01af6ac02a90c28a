from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.config import BackboneConfig
from wsss.errors import StoreError
from wsss.models.cam import CamNet
from wsss.ops.cam import multiscale_cams
from wsss.stages.seed import CAM_DIR, load_cams, save_cams


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


def test_cam_files_round_trip(tmp_path: Path) -> None:
    (tmp_path / CAM_DIR).mkdir()
    cams = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    save_cams(tmp_path / CAM_DIR / "x.npz", np.array([4, 9]), cams)
    keys, loaded = load_cams(tmp_path, "x")
    assert keys.tolist() == [4, 9] and np.allclose(loaded, cams, atol=1e-3)


def test_damaged_cam_files_are_store_errors(tmp_path: Path) -> None:
    """CAM files may come from a shared store: pickled object arrays are refused, damage is named."""
    (tmp_path / CAM_DIR).mkdir()
    cases = {
        "garbage": lambda p: p.write_bytes(b"not a zip"),
        "objects": lambda p: np.savez(p, keys=np.array([object()], dtype=object), cams=np.zeros((1, 2, 2))),
        "no cams": lambda p: np.savez(p, keys=np.zeros(1, np.int16)),
        "shapes": lambda p: np.savez(p, keys=np.zeros(2, np.int16), cams=np.zeros((1, 2, 2))),
    }
    for image_id, write in cases.items():
        write(tmp_path / CAM_DIR / f"{image_id}.npz")
        with pytest.raises(StoreError, match=rf"{image_id}\.npz: damaged CAM file in the seed artifact"):
            load_cams(tmp_path, image_id)
