"""FMix's mask sampler is a pure function of its generator: binary masks, the drawn share of pixels,
smoother masks for steeper spectra; and its loss, plain or reformulated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss.config import BackboneConfig
from wsss.methods.base import Batch
from wsss.methods.fmix import METHOD, FMixConfig, binarise, low_frequency_noise, sample_mask
from wsss.models.cam import CamNet


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (17, 9)])
def test_binary_with_the_drawn_share_of_pixels(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    n = shape[0] * shape[1]
    for _ in range(50):
        lam, mask = sample_mask(rng, shape, alpha=1.0, decay_power=3.0, max_soft=0.0)
        assert mask.shape == shape and mask.dtype == np.float32
        assert set(np.unique(mask).tolist()) <= {0.0, 1.0}
        assert abs(float(mask.mean()) - lam) <= 1.0 / n + 1e-9


def test_soft_masks_ramp_around_the_cut() -> None:
    rng = np.random.default_rng(1)
    grey = low_frequency_noise(rng, (32, 32), 3.0)
    mask = binarise(grey, 0.5, 0.1, rng)
    soft = mask[(mask > 0) & (mask < 1)]
    assert soft.size > 150  # about 2 * 0.1 * 1024 pixels ramp from 1 to 0
    assert abs(float(mask.mean()) - 0.5) < 0.01
    assert (mask[grey > np.quantile(grey, 0.75)] == 1).all() and (
        mask[grey < np.quantile(grey, 0.25)] == 0
    ).all()


def _boundary(mask: np.ndarray) -> float:
    return float((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())


def test_steeper_spectra_give_smoother_masks() -> None:
    rng = np.random.default_rng(2)
    lengths = {
        power: np.mean(
            [_boundary(binarise(low_frequency_noise(rng, (64, 64), power), 0.5, 0.0, rng)) for _ in range(20)]
        )
        for power in (1.0, 3.0, 5.0)
    }
    assert lengths[1.0] > lengths[3.0] > lengths[5.0]


def test_reformulated_lambda_leans_high_and_draws_repeat_per_seed() -> None:
    plain = [sample_mask(np.random.default_rng(s), (8, 8), 1.0, 3.0)[0] for s in range(400)]
    reform = [
        sample_mask(np.random.default_rng(s), (8, 8), 1.0, 3.0, reformulate=True)[0] for s in range(400)
    ]
    assert np.mean(reform) > np.mean(plain) + 0.1  # Beta(2, 1) has mean 2/3, Beta(1, 1) 1/2
    a, b = (
        sample_mask(np.random.default_rng(7), (16, 16), 1.0, 3.0),
        sample_mask(np.random.default_rng(7), (16, 16), 1.0, 3.0),
    )
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("reformulate", [False, True])
def test_the_reformulated_objective_drops_the_second_label(reformulate: bool) -> None:
    """ecs-vlc/FMix `fmix_loss`: lam * L(y) + (1 - lam) * L(y[perm]) normally; L(y) alone when
    reformulated. The mixed images, mask and permutation are replayed from the same seed."""
    model = CamNet(BackboneConfig(name="test_resnet"), num_classes=3).eval()
    images = torch.rand(4, 3, 32, 32)
    labels = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    params = FMixConfig(reformulate=reformulate, lambda_ent=0.0, lambda_con=0.0)
    torch.manual_seed(7)
    _, stats = METHOD.loss(model, Batch(images, labels), params)
    torch.manual_seed(7)
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
    _, mask = sample_mask(rng, (32, 32), params.alpha, params.decay_power, params.max_soft, reformulate)
    perm = torch.randperm(4)
    mask_t = torch.from_numpy(mask)
    with torch.no_grad():
        logits, _ = model.logits_and_cams(mask_t * images + (1 - mask_t) * images[perm])
    first = F.multilabel_soft_margin_loss(logits, labels).item()
    second = F.multilabel_soft_margin_loss(logits, labels[perm]).item()
    lam = float(mask.mean())
    expected = first if reformulate else lam * first + (1 - lam) * second
    assert abs(first - second) > 1e-4  # the two label sets really give different losses here
    assert stats["cls"] == pytest.approx(expected, abs=1e-6)
    assert stats["lam"] == pytest.approx(lam)
