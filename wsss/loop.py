"""The one training loop every trainable stage uses: SGD with momentum, per-iteration poly LR and psa's
four parameter groups (backbone weights 1x lr, backbone biases 2x without decay, new weights 10x, new
biases 20x without decay), AMP on CUDA, a progress bar. A stage or seed method supplies only its loss."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from wsss.config import TrainConfig
from wsss.data.torchsets import train_loader
from wsss.errors import WsssError
from wsss.models.backbone import SplitParams
from wsss.runtime import Runtime, seeded

log = logging.getLogger(__name__)

# loss_fn(model, batch) -> (loss, {name: value}) ; the batch is already on the device.
M = TypeVar("M", bound=SplitParams)
LossFn = Callable[[nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor, dict[str, float]]]


class TrainingDiverged(WsssError):
    """The loss became NaN or infinite, or grew `GROWTH_LIMIT`-fold over the first epoch's mean;
    usually the learning rate is too high."""


# An epoch whose mean loss is this many times the first epoch's has diverged: SGD past its stability
# limit grows the loss geometrically and can stay finite in float32 to the end (SC-CAM at K 3 on
# msrc: 4.9 in epoch 1, 4,781 in epoch 3, 2.3e35 in epoch 8, and CAMs of zero).
GROWTH_LIMIT = 100.0


@dataclass
class TrainStats:
    steps: int = 0
    seconds: float = 0.0
    images: int = 0
    epoch_losses: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "images": self.images,
            "epoch_losses": self.epoch_losses,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainStats:
        losses = [float(v) for v in raw["epoch_losses"]]
        return cls(int(raw["steps"]), float(raw["seconds"]), int(raw["images"]), losses)

    def metrics(self, stage: str) -> dict[str, float]:
        return {
            f"{stage}_train_seconds": self.seconds,
            f"{stage}_train_images_per_second": self.images_per_second,
            f"{stage}_final_loss": self.epoch_losses[-1] if self.epoch_losses else float("nan"),
        }


def param_groups(model: SplitParams, cfg: TrainConfig) -> list[dict]:  # type: ignore[type-arg]
    """psa's groups; 1-d parameters (biases, norm scales) go with the biases and get no weight decay."""
    m_bw, m_bb, m_nw, m_nb = cfg.lr_mults
    groups = []
    for params, (mult_w, mult_b) in (
        (model.backbone_parameters(), (m_bw, m_bb)),
        (model.new_parameters(), (m_nw, m_nb)),
    ):
        weights = [p for p in params if p.ndim > 1]
        biases = [p for p in params if p.ndim <= 1]
        groups.append({"params": weights, "lr": cfg.lr * mult_w, "weight_decay": cfg.weight_decay})
        groups.append({"params": biases, "lr": cfg.lr * mult_b, "weight_decay": 0.0})
    for g in groups:
        g["initial_lr"] = g["lr"]
    return [g for g in groups if g["params"]]


def make_optimizer(model: SplitParams, cfg: TrainConfig) -> torch.optim.SGD:
    # psa's PolyOptimizer calls SGD(params, lr, weight_decay): the third positional argument is momentum,
    # so the reference code trains with momentum = weight decay, i.e. almost none (psa#28, SEAM#21).
    momentum = cfg.weight_decay if cfg.reference_momentum_bug else cfg.momentum
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=momentum)


def poly_factor(step: int, total: int, power: float) -> float:
    return (1.0 - step / total) ** power if total > 0 else 1.0


def _amp_dtype(runtime: Runtime, cfg: TrainConfig) -> torch.dtype | None:
    if not (cfg.amp and runtime.cuda):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _to_device(
    batch: tuple[torch.Tensor, ...] | list[torch.Tensor], runtime: Runtime
) -> tuple[torch.Tensor, ...]:
    out = []
    for t in batch:
        t = t.to(runtime.device, non_blocking=True)
        if runtime.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        out.append(t)
    return tuple(out)


def fit(
    model: SplitParams,
    loss_fn: LossFn,
    loader: DataLoader,  # type: ignore[type-arg]
    cfg: TrainConfig,
    runtime: Runtime,
    desc: str,
) -> TrainStats:
    """Train `model` in place for `cfg.epochs` epochs over `loader`."""
    runtime.place(model)
    model.train()
    optimizer = make_optimizer(model, cfg)
    amp_dtype = _amp_dtype(runtime, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    total = cfg.epochs * len(loader)
    stats = TrainStats()
    start = time.perf_counter()
    with tqdm(total=total, desc=desc, disable=not runtime.progress, leave=False, dynamic_ncols=True) as bar:
        for _epoch in range(cfg.epochs):
            running, count = 0.0, 0
            for batch in loader:
                factor = poly_factor(stats.steps, total, cfg.poly_power)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                batch = _to_device(batch, runtime)
                with torch.autocast(
                    runtime.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    loss, parts = loss_fn(model, batch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"{desc}: loss became {value} at step {stats.steps + 1}/{total} "
                        f"(lr {cfg.lr * factor:.3g}); lower {desc}.train.lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                stats.steps += 1
                stats.images += int(batch[0].shape[0])
                running, count = running + value, count + 1
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", **{k: f"{v:.3g}" for k, v in parts.items()})
            stats.epoch_losses.append(running / max(count, 1))
            log.debug("%s epoch %d loss %.4f %s", desc, _epoch + 1, stats.epoch_losses[-1], parts)
            _check_growth(stats.epoch_losses, desc, cfg.lr)
    stats.seconds = time.perf_counter() - start
    model.eval()
    return stats


def _check_growth(epoch_losses: list[float], desc: str, lr: float) -> None:
    first, last = epoch_losses[0], epoch_losses[-1]
    if len(epoch_losses) > 1 and first > 0 and last > GROWTH_LIMIT * first:
        raise TrainingDiverged(
            f"{desc}: loss grew from {first:.4g} (epoch 1) to {last:.4g} (epoch {len(epoch_losses)}), "
            f"over {GROWTH_LIMIT:g}x; lower {desc}.train.lr (now {lr:g}) or the method's loss weights"
        )


def train_model(
    build: Callable[[], M],
    dataset: Dataset,  # type: ignore[type-arg]
    loss_fn: LossFn,
    cfg: TrainConfig,
    runtime: Runtime,
    rng_seed: int,
    desc: str,
) -> tuple[M, TrainStats]:
    """Build a model and train it on `dataset`, seeding initialisation, shuffling and augmentation."""
    with seeded(rng_seed, runtime.device):
        model = build()
        loader = train_loader(dataset, cfg.batch_size, rng_seed, runtime.workers, runtime.cuda)
        stats = fit(model, loss_fn, loader, cfg, runtime, desc)
    log.info(
        "%s: trained %s in %.1fs, %.0f img/s",
        desc,
        type(model).__name__,
        stats.seconds,
        stats.images_per_second,
    )
    return model, stats
