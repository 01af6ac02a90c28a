from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wsss.config_load import load_config
from wsss.data.classes import IGNORE_INDEX
from wsss.errors import ConfigError
from wsss.stages.segment import balanced_cross_entropy, class_balanced_cross_entropy, msc_loss


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


class _ScaleMarker(torch.nn.Module):
    """A 'network' whose logits say which input size it saw, upsampled to its input like DeepLab's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
        logits[:, 1] = x.shape[-1] / 8  # 8 px input: 1.0, 4 px: 0.5, 6 px: 0.75
        logits[:, 2] = x.mean(dim=1)
        return logits


def test_msc_training_sums_the_loss_over_scales_and_their_max() -> None:
    """kazuto1011 main.py:232-236: criterion on the logits of the 1.0, 0.5 and 0.75 inputs (each at
    the 1.0 size) and on their pixel-wise max, summed."""
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    model = _ScaleMarker()
    seen: list[tuple[float, ...]] = []

    def criterion(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        assert logits.shape[-2:] == masks.shape[-2:] == (8, 8)
        seen.append(tuple(logits[:, 1].flatten().unique().tolist()))
        return F.cross_entropy(logits, masks)

    loss = msc_loss(model, images, target, (1.0, 0.5, 0.75), criterion)
    assert seen == [(1.0,), (0.5,), (0.75,), (1.0,)]  # the max keeps the largest class-1 logit
    outs = [model(images)]
    for side in (4, 6):
        small = model(F.interpolate(images, size=(side, side), mode="bilinear", align_corners=False))
        outs.append(F.interpolate(small, size=(8, 8), mode="bilinear", align_corners=False))
    outs.append(torch.stack(outs).amax(dim=0))
    assert loss.item() == pytest.approx(sum(F.cross_entropy(o, target).item() for o in outs))


def test_msc_scales_start_at_one() -> None:
    assert load_config("voc12").segment.msc_scales == (1.0, 0.5, 0.75)
    with pytest.raises(ConfigError, match=r"segment\.msc_scales: must be 1\.0 then other scales"):
        load_config(None, ["segment.msc_scales=[0.5,1.0]"])
    assert load_config(None, ["segment.msc_scales=[1.0,0.5]"]).segment.msc_scales == (1.0, 0.5)
