"""Fully connected CRF (Krähenbühl & Koltun 2011) through pydensecrf2, the optional `crf` extra."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from wsss.config import CrfConfig
from wsss.errors import MissingExtraError


def _densecrf(config_key: str) -> ModuleType:
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise MissingExtraError(
            f"{config_key}=true needs the dense CRF from the `crf` extra: pip install -e '.[crf]' "
            f"(or set {config_key}=false)"
        ) from None
    return dcrf


def require_crf(config_key: str) -> None:
    """Fail before any work is done if the CRF is asked for but not installed."""
    _densecrf(config_key)


def crf_refine(image: np.ndarray, probs: np.ndarray, cfg: CrfConfig, config_key: str) -> np.ndarray:
    """(C, H, W) scores -> (C, H, W) CRF marginals for an (H, W, 3) uint8 image.

    Scores need not sum to one (psa feeds its background-augmented CAMs); they are normalised here and
    turned into unaries as -log p, as pydensecrf's unary_from_softmax does.
    """
    dcrf = _densecrf(config_key)
    c, h, w = probs.shape
    p = np.clip(probs.astype(np.float32), 1e-5, None)
    p /= p.sum(axis=0, keepdims=True)
    model = dcrf.DenseCRF2D(w, h, c)
    model.setUnaryEnergy(np.ascontiguousarray(-np.log(p).reshape(c, -1)))
    model.addPairwiseGaussian(sxy=cfg.gauss_sxy, compat=cfg.gauss_compat)
    model.addPairwiseBilateral(
        sxy=cfg.bilateral_sxy,
        srgb=cfg.bilateral_srgb,
        rgbim=np.ascontiguousarray(image),
        compat=cfg.bilateral_compat,
    )
    return np.asarray(model.inference(cfg.iterations), dtype=np.float32).reshape(c, h, w)
