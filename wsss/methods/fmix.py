"""FMix-CAM (mva-wsss; FMix = Harris et al. 2020): Mixup-CAM with the images combined through a binary
mask cut from low-frequency Fourier noise instead of blended, so each image keeps whole regions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from wsss.errors import ConfigError
from wsss.methods._mixing import LAMBDA_CON, LAMBDA_ENT, check_mixing, mixing_loss
from wsss.methods.base import Batch, SeedMethod
from wsss.models.cam import CamNet


@dataclass(frozen=True)
class FMixConfig:
    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha) (FMix default)
    decay_power: float = 3.0  # spectrum ~ 1 / f^decay_power: larger gives blobbier masks
    max_soft: float = 0.0  # width of a linear ramp around the cut, as a fraction of the pixels
    # FMix's reformulated objective: lambda ~ Beta(alpha + 1, alpha) and the loss on the first
    # image's labels only (ecs-vlc/FMix fmix_loss); the mixed image is then an augmentation of it.
    reformulate: bool = False
    lambda_ent: float = LAMBDA_ENT
    lambda_con: float = LAMBDA_CON

    def validate(self, path: str) -> None:
        check_mixing(self.alpha, self.lambda_ent, self.lambda_con, path)
        if self.decay_power <= 0:
            raise ConfigError(f"{path}.decay_power: must be > 0, got {self.decay_power}")
        if not 0 <= self.max_soft <= 0.5:
            raise ConfigError(f"{path}.max_soft: must be within [0, 0.5], got {self.max_soft}")


def low_frequency_noise(rng: np.random.Generator, shape: tuple[int, int], decay_power: float) -> np.ndarray:
    """A grey image in [0, 1] whose spectrum falls as 1 / max(f, 1/max(h, w))^decay_power."""
    h, w = shape
    freq = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    scale = 1.0 / np.maximum(freq, 1.0 / max(h, w)) ** decay_power
    spectrum = (rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape)) * scale
    grey = np.fft.irfft2(spectrum, s=(h, w))
    grey -= grey.min()
    return grey / max(float(grey.max()), 1e-12)


def binarise(grey: np.ndarray, lam: float, max_soft: float, rng: np.random.Generator) -> np.ndarray:
    """The top ceil or floor (lam * N) pixels of `grey` become 1, the rest 0; with max_soft a band of
    pixels around the cut ramps linearly from 1 to 0 (narrowed to min(lam, 1 - lam))."""
    n = grey.size
    order = np.argsort(-grey, axis=None, kind="stable")
    count = math.ceil(lam * n) if rng.random() > 0.5 else math.floor(lam * n)
    soft = int(n * min(max_soft, lam, 1 - lam))
    low, high = count - soft, count + soft
    flat = np.zeros(n, dtype=np.float32)
    flat[order[:high]] = 1.0
    flat[order[low:]] = 0.0
    if high > low:
        flat[order[low:high]] = np.linspace(1.0, 0.0, high - low, dtype=np.float32)
    return flat.reshape(grey.shape)


def sample_mask(
    rng: np.random.Generator,
    shape: tuple[int, int],
    alpha: float,
    decay_power: float,
    max_soft: float = 0.0,
    reformulate: bool = False,
) -> tuple[float, np.ndarray]:
    """(drawn lambda, (H, W) float32 mask) as in FMix: a thresholded low-frequency noise image."""
    lam = float(rng.beta(alpha + 1, alpha) if reformulate else rng.beta(alpha, alpha))
    return lam, binarise(low_frequency_noise(rng, shape, decay_power), lam, max_soft, rng)


class FMix(SeedMethod):
    name = "fmix"
    description = "FMix-CAM: Fourier-mask mixing + Mixup-CAM's regularisers (mva-wsss, Harris et al. 2020)"
    Config = FMixConfig

    def loss(self, model: CamNet, batch: Batch, params: FMixConfig) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch.images, batch.labels
        # numpy draws seeded from torch's generator, which the shared loop seeds: runs stay reproducible
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
        _, mask_np = sample_mask(
            rng,
            (images.shape[-2], images.shape[-1]),
            params.alpha,
            params.decay_power,
            params.max_soft,
            params.reformulate,
        )
        mask = torch.from_numpy(mask_np).to(images.device, images.dtype)
        perm = torch.randperm(images.shape[0], device=images.device)
        logits, maps = model.logits_and_cams(mask * images + (1 - mask) * images[perm])
        lam = float(mask_np.mean())  # the share of each image actually kept weighs its labels
        # Reformulated: no second-label term, in the classification loss nor in the concentration term.
        weight = 1.0 if params.reformulate else lam
        total, stats = mixing_loss(logits, maps, labels, perm, weight, params.lambda_ent, params.lambda_con)
        return total, stats | {"lam": lam}


METHOD = FMix()
