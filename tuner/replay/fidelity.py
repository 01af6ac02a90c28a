"""How much a rung's proxy says about the final quality, measured on the whole pool (not only on the
trials a search let through, which is the range the rungs already cut: search-review.md B9).

- Spearman's rank correlation of proxy against true quality over the pool's pipelines, with a 90%
  bootstrap CI, for CAM -> val, pseudo-mask -> val and DeepLab at a short schedule -> full.
- Retention: the share of the true top 10% that a rung keeping the proxy's top fraction would keep.
- The stage interaction: two-way ANOVA of val on upstream (seed x refine config) x segment config,
  as shares of the total sum of squares (one observation per cell: the interaction is the residual).
- Noise: the pooled standard deviation over rng_seeds of each stage's metric, from the repeats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr

from tuner.replay.pool import Pool

KEEP = (0.5, 0.25, 0.1)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(spearmanr(x, y).statistic)


def retention(proxy: np.ndarray, true: np.ndarray, keep: float, top: float = 0.1) -> float:
    n = len(true)
    best = set(np.argsort(-true)[: max(1, round(top * n))].tolist())
    kept = set(np.argsort(-proxy)[: max(1, round(keep * n))].tolist())
    return len(best & kept) / len(best)


def proxies(pool: Pool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Name -> (proxy, true quality) over the pool's pipelines."""
    rows = list(pool.rows.values())
    true = np.array([r.true for r in rows])
    out = {
        "cam -> val": (np.array([r.cam for r in rows]), true),
        "pseudo -> val": (np.array([r.pseudo for r in rows]), true),
        "val (search half) -> val": (np.array([r.val for r in rows]), true),
    }
    full = pool.design.meta.get("base", {}).get("segment", {}).get("train", {}).get("epochs", "full")
    for epochs in pool.design.short_epochs:
        if all(epochs in r.short for r in rows):
            out[f"deeplab@{epochs}/{full} -> val"] = (np.array([r.short[epochs][0] for r in rows]), true)
    return out


def rung_fidelity(pool: Pool, rng: np.random.Generator, boot: int = 2000) -> dict[str, dict[str, float]]:
    out = {}
    for name, (proxy, true) in proxies(pool).items():
        n = len(true)
        samples = [_spearman(proxy[i], true[i]) for i in (rng.integers(0, n, n) for _ in range(boot))]
        low, high = np.nanquantile(samples, [0.05, 0.95])
        out[name] = {"spearman": _spearman(proxy, true), "ci_low": float(low), "ci_high": float(high)}
        out[name] |= {f"keep {keep:g}": retention(proxy, true, keep) for keep in KEEP}
    return out


def interaction(pool: Pool) -> dict[str, float] | None:
    """Shares of the total sum of squares of true quality explained by the upstream (seed x refine
    config), by the segment config, and left to their interaction (and noise); None for a table with
    one upstream or one segment config, which has no second factor to share with."""
    ups = sorted({(k[0], k[1]) for k in pool.rows})
    segs = sorted({k[2] for k in pool.rows})
    if len(ups) < 2 or len(segs) < 2:
        return None
    table = np.array([[pool.rows[(u[0], u[1], g)].true for g in segs] for u in ups])
    grand = table.mean()
    total = ((table - grand) ** 2).sum()
    upstream = len(segs) * ((table.mean(axis=1) - grand) ** 2).sum()
    segment = len(ups) * ((table.mean(axis=0) - grand) ** 2).sum()
    return {
        "upstream": float(upstream / total),
        "segment": float(segment / total),
        "interaction": float((total - upstream - segment) / total),
    }


def noise(pool: Pool) -> dict[str, Any]:
    """Pooled sd over rng_seeds of CAM, pseudo-mask and val mIoU; the number of repeated pipelines."""
    metrics = {
        "cam": ("metrics", "cam_miou_best"),
        "pseudo": ("metrics", "pseudo_miou"),
        "val": ("val", "report"),
    }
    out: dict[str, Any] = {"pipelines": len(pool.noise)}
    for name, (group, key) in metrics.items():
        variances = [
            np.var([r[group][key] for r in rows], ddof=1) for rows in pool.noise.values() if len(rows) > 1
        ]
        out[name] = float(np.sqrt(np.mean(variances))) if variances else None
    return out
