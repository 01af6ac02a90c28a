"""Pieces shared by the mixing methods (Mixup-CAM, FMix-CAM, Manifold-Mixup-CAM; Chang et al. BMVC 2020
as reimplemented in mva-wsss): mixing coefficients, the mixed label loss and the two regularisers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.errors import ConfigError

# Weights of Mixup-CAM's regularisers (mva-wsss defaults): entropy of the predicted class probabilities,
# spatial concentration of the present classes' CAMs.
LAMBDA_ENT, LAMBDA_CON = 0.02, 2e-4


def check_mixing(alpha: float, lambda_ent: float, lambda_con: float, path: str) -> None:
    """The knobs every mixing method has: the Beta parameter and the two regulariser weights."""
    if alpha <= 0:
        raise ConfigError(f"{path}.alpha: must be > 0, got {alpha}")
    if lambda_ent < 0:
        raise ConfigError(f"{path}.lambda_ent: must be >= 0, got {lambda_ent}")
    if lambda_con < 0:
        raise ConfigError(f"{path}.lambda_con: must be >= 0, got {lambda_con}")


def beta(alpha: float) -> float:
    """lambda ~ Beta(alpha, alpha), drawn from torch's (seeded) generator."""
    return float(torch.distributions.Beta(alpha, alpha).sample())


def mixed_bce(logits: torch.Tensor, labels: torch.Tensor, partner: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * BCE(y_hat, y) + (1 - lam) * BCE(y_hat, y_perm), the multi-label soft-margin loss of each."""
    return lam * F.multilabel_soft_margin_loss(logits, labels) + (1 - lam) * F.multilabel_soft_margin_loss(
        logits, partner
    )


def entropy(logits: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean binary entropy of the predicted probabilities p = sigmoid(logits) over batch x classes.

    On the predictions, as the paper intends: the reference reimplementation evaluates it on the mixed
    *targets*, a constant with no gradient.
    """
    p = torch.sigmoid(logits.float())
    return -(p * torch.log(p + eps) + (1 - p) * torch.log(1 - p + eps)).mean()


def concentration(maps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SCOPS' concentration loss as Mixup-CAM uses it: sum over images and present classes of the spatial
    variance of the class's CAM, normalised to a distribution over pixels, divided by the batch size.

    The CAMs (ReLU of the classifier map) are softmaxed over classes first. Coordinates are x = 2i/W - 1
    along the width and y = 2j/H - 1 along the height, built separately, so non-square maps are right
    (SCOPS' get_coordinate_tensors transposes them).
    """
    probs = F.relu(maps.float()).softmax(dim=1)
    b, _, h, w = probs.shape
    pdf = probs + 1e-3
    pdf = pdf / pdf.sum(dim=(2, 3), keepdim=True)
    ys = (torch.arange(h, device=maps.device, dtype=pdf.dtype) / h * 2 - 1).view(1, 1, h, 1)
    xs = (torch.arange(w, device=maps.device, dtype=pdf.dtype) / w * 2 - 1).view(1, 1, 1, w)
    mu_x = (pdf * xs).sum(dim=(2, 3), keepdim=True)
    mu_y = (pdf * ys).sum(dim=(2, 3), keepdim=True)
    variance = (pdf * ((xs - mu_x) ** 2 + (ys - mu_y) ** 2)).sum(dim=(2, 3))
    return (variance * (labels > 0.5)).sum() / b


def mixing_loss(
    logits: torch.Tensor,
    maps: torch.Tensor,
    labels: torch.Tensor,
    perm: torch.Tensor,
    lam: float,
    lambda_ent: float,
    lambda_con: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = mixed BCE + lambda_ent * entropy + lambda_con * (lam * L_con(y) + (1 - lam) * L_con(y_perm))."""
    partner = labels[perm]
    cls = mixed_bce(logits, labels, partner, lam)
    ent = entropy(logits)
    con = lam * concentration(maps, labels) + (1 - lam) * concentration(maps, partner)
    total = cls + lambda_ent * ent + lambda_con * con
    return total, {
        "cls": float(cls.detach()),
        "ent": float(ent.detach()),
        "con": float(con.detach()),
        "lam": lam,
    }
