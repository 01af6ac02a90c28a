"""Batched inference (runtime.infer_batch) gives each image what it gets alone: images of one size
go through the networks together, each with its flip and its own classes."""

from __future__ import annotations

import numpy as np
import torch

from wsss.config import BackboneConfig, RefineConfig
from wsss.data.batches import same_size_batches
from wsss.models.affinity import AffinityNet
from wsss.models.cam import CamNet
from wsss.models.deeplab import DeepLabV2
from wsss.ops.cam import batch_multiscale_cams, multiscale_cams
from wsss.stages.segment import batch_predict_probs
from wsss.stages.walk import embed, walk_embedding

CPU = torch.device("cpu")


def test_batches_hold_images_of_one_size_in_order() -> None:
    sizes = {"a": (5, 7), "b": (7, 5), "c": (5, 7), "d": (5, 7), "e": (7, 5)}
    batches = list(same_size_batches(list(sizes), sizes.__getitem__, 2))
    assert batches == [["a", "c"], ["d"], ["b", "e"]]
    assert list(same_size_batches(list(sizes), sizes.__getitem__, 1)) == [[i] for i in "acdbe"]


def test_batched_cams_are_each_images_own() -> None:
    torch.manual_seed(0)
    model = CamNet(BackboneConfig(name="test_resnet"), num_classes=5).eval()
    images = torch.randn(3, 3, 40, 56)
    keys = [np.array([1, 3]), np.array([0]), np.array([2, 3, 4])]
    together = batch_multiscale_cams(model, images, keys, (1.0, 0.5, 1.5), True, CPU)
    for image, image_keys, cams in zip(images, keys, together, strict=True):
        alone = multiscale_cams(model, image, image_keys, (1.0, 0.5, 1.5), True, CPU)
        assert cams.shape == (len(image_keys), 40, 56)
        assert torch.allclose(cams, alone, atol=1e-5)


def test_batched_val_predictions_are_each_images_own() -> None:
    torch.manual_seed(0)
    model = DeepLabV2(BackboneConfig(name="test_resnet"), 4).eval()
    images = torch.randn(3, 3, 33, 45)
    with torch.no_grad():
        together = batch_predict_probs(model, images, (1.0, 0.75), True, CPU)
        alone = torch.cat([batch_predict_probs(model, x[None], (1.0, 0.75), True, CPU) for x in images])
    assert together.shape == (3, 4, 33, 45)
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together.sum(dim=1), torch.ones(3, 33, 45), atol=1e-5)


def test_batched_walk_embeddings_give_each_images_own_mask() -> None:
    torch.manual_seed(0)
    cfg = RefineConfig(backbone=BackboneConfig(name="test_resnet"), logt=2)
    model = AffinityNet(cfg.backbone, stride=cfg.stride).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (30, 42, 3), dtype=np.uint8) for _ in range(3)]
    cams = [rng.random((2, 30, 42)).astype(np.float32) for _ in images]
    keys = np.array([0, 2])
    together = embed(model, images, CPU)
    for image, image_cams, embedding in zip(images, cams, together, strict=True):
        alone = embed(model, [image], CPU)[0]
        assert torch.allclose(embedding, alone, atol=1e-5)
        np.testing.assert_array_equal(
            walk_embedding(embedding, model.stride, image_cams, keys, cfg),
            walk_embedding(alone, model.stride, image_cams, keys, cfg),
        )
