from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsss.config import load_config
from wsss.data.classes import IGNORE_INDEX
from wsss.errors import ConfigError
from wsss.stages.segment import balanced_cross_entropy, class_balanced_cross_entropy


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """12 background pixels, 2 of class 1, 1 of class 2, 1 ignored."""
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = target[0, 0, 1] = 1
    target[0, 1, 0] = 2
    target[0, 3, 3] = IGNORE_INDEX
    logits = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return logits, target, F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")


def test_balanced_ce_weighs_background_against_foreground() -> None:
    """The AdvCAM/AMN reference: mean over background pixels and mean over all foreground pixels."""
    logits, target, pixel = _batch()
    expected = (pixel[target == 0].mean() + pixel[(target > 0) & (target != IGNORE_INDEX)].mean()) / 2
    assert balanced_cross_entropy(logits, target) == pytest.approx(expected.item())
    per_class = (pixel[target == 0].mean() + pixel[target == 1].mean() + pixel[target == 2].mean()) / 3
    assert balanced_cross_entropy(logits, target) != pytest.approx(per_class.item())  # not per class
    only_background = torch.where(target > 0, torch.zeros_like(target), target)
    assert balanced_cross_entropy(logits, only_background) == pytest.approx(
        F.cross_entropy(logits, only_background, ignore_index=IGNORE_INDEX).item()
    )
    assert balanced_cross_entropy(logits, torch.full_like(target, IGNORE_INDEX)) == 0


def test_class_balanced_ce_weighs_each_present_class_equally() -> None:
    logits, target, pixel = _batch()
    expected = (pixel[target == 0].mean() + pixel[target == 1].mean() + pixel[target == 2].mean()) / 3
    assert class_balanced_cross_entropy(logits, target) == pytest.approx(expected.item())
    assert class_balanced_cross_entropy(logits, torch.full_like(target, IGNORE_INDEX)) == 0


def test_per_class_balance_needs_balanced_ce() -> None:
    assert load_config(
        None, ["segment.balanced_ce=true", "segment.balance_per_class=true"]
    ).segment.balance_per_class
    with pytest.raises(ConfigError, match=r"segment\.balance_per_class: only applies with balanced_ce: true"):
        load_config(None, ["segment.balance_per_class=true"])
