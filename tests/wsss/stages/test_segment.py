from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsss.data.classes import IGNORE_INDEX
from wsss.stages.segment import balanced_cross_entropy


def test_balanced_ce_weighs_each_present_class_equally() -> None:
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 2  # one pixel of class 2 among 15 of background
    target[0, 3, 3] = IGNORE_INDEX
    logits = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    expected = (pixel[target == 0].mean() + pixel[target == 2].mean()) / 2
    assert balanced_cross_entropy(logits, target) == pytest.approx(expected.item())
    assert balanced_cross_entropy(logits, torch.full_like(target, IGNORE_INDEX)) == 0
