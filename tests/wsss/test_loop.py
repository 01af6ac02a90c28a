from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from wsss.config import BackboneConfig, TrainConfig
from wsss.loop import TrainingDiverged, fit, make_optimizer, poly_factor
from wsss.models.cam import CamNet
from wsss.runtime import Runtime, seeded

CPU = Runtime(torch.device("cpu"), progress=False)


def _model() -> CamNet:
    return CamNet(BackboneConfig(name="test_resnet"), num_classes=2)


def test_momentum_is_real_unless_the_reference_bug_is_asked_for() -> None:
    fixed = make_optimizer(_model(), TrainConfig(momentum=0.9, weight_decay=5e-4))
    assert all(g["momentum"] == 0.9 for g in fixed.param_groups)
    buggy = make_optimizer(
        _model(), TrainConfig(momentum=0.9, weight_decay=5e-4, reference_momentum_bug=True)
    )
    assert all(g["momentum"] == 5e-4 for g in buggy.param_groups)  # psa: SGD(params, lr, weight_decay)


def test_four_parameter_groups_with_psa_multipliers() -> None:
    model = _model()
    groups = make_optimizer(model, TrainConfig(lr=0.1, weight_decay=1e-4)).param_groups
    by_lr = {round(g["lr"], 6): g for g in groups}
    assert sorted(by_lr) == [0.1, 0.2, 1.0]  # the bias-free classifier has no 20x group
    assert by_lr[0.1]["weight_decay"] == 1e-4 and by_lr[0.2]["weight_decay"] == 0.0
    assert by_lr[1.0]["params"] == [model.classifier.weight] and by_lr[1.0]["weight_decay"] == 1e-4
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_poly_schedule() -> None:
    assert poly_factor(0, 100, 0.9) == 1.0
    assert poly_factor(50, 100, 0.9) == pytest.approx(0.5**0.9)
    assert poly_factor(100, 100, 0.9) == 0.0


def _toy_loader(seed: int = 0) -> DataLoader:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(16, 3, 32, 32, generator=g)
    labels = torch.zeros(16, 2)
    labels[:8, 0] = 1
    labels[8:, 1] = 1
    images[:8, 0] += 2.0  # class 0 is red
    return DataLoader(
        TensorDataset(images, labels),
        batch_size=4,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )


def _train(epochs: int) -> tuple[CamNet, list[float]]:
    cfg = TrainConfig(epochs=epochs, lr=0.01)
    with seeded(0, CPU.device):
        model = _model()
        stats = fit(
            model,
            lambda m, b: (F.multilabel_soft_margin_loss(m(b[0]), b[1]), {}),
            _toy_loader(),
            cfg,
            CPU,
            "t",
        )
    assert stats.steps == epochs * 4 and stats.images == epochs * 16
    return model, stats.epoch_losses


def test_training_learns_and_is_deterministic() -> None:
    model_a, losses = _train(6)
    assert losses[-1] < losses[0]
    model_b, _ = _train(6)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True)
    )
    assert not model_a.training  # fit hands back a model in eval mode


def test_divergence_is_reported_with_the_knob_to_turn() -> None:
    def nan_loss(m: torch.nn.Module, b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        return m(b[0]).sum() * float("nan"), {}

    with pytest.raises(TrainingDiverged, match=r"seed: loss became nan at step 1/4 .* lower seed.train.lr"):
        fit(_model(), nan_loss, _toy_loader(), TrainConfig(epochs=1), CPU, "seed")


def test_a_loss_that_grows_geometrically_but_stays_finite_is_divergence() -> None:
    """SGD past its stability limit: the loss grows tenfold a step, finite to the end (methods on msrc)."""
    steps = iter(range(100))

    def growing(m: torch.nn.Module, b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        return m(b[0]).mean() * 0 + 10.0 ** next(steps), {}

    grew = r"seed: loss grew from 277\.8 \(epoch 1\) to 2\.778e\+06 \(epoch 2\), over 100x"
    with pytest.raises(TrainingDiverged, match=grew):
        fit(_model(), growing, _toy_loader(), TrainConfig(epochs=3, lr=0.01), CPU, "seed")


def test_a_loss_that_rises_a_little_is_not_divergence() -> None:
    values = iter([1.0] * 4 + [50.0] * 4)  # 50x the first epoch's mean: kept

    def rising(m: torch.nn.Module, b: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, float]]:
        return m(b[0]).mean() * 0 + next(values), {}

    stats = fit(_model(), rising, _toy_loader(), TrainConfig(epochs=2, lr=0.01), CPU, "seed")
    assert stats.epoch_losses == [1.0, 50.0]
