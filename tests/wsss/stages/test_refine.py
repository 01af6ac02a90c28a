from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.config import RefineConfig
from wsss.data.classes import IGNORE_INDEX
from wsss.stages.refine import affinity_loss, confident_labels, grid_labels


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
