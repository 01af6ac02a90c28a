"""AffinityNet's random walk (Ahn & Kwak 2018, section 3.3) on a sparse transition matrix.

psa builds the dense N x N affinity matrix and squares it logt times, which needs several N x N copies
(irn's variant runs out of memory on 11 GB cards, ReCAM#13). Affinities are only non-zero within the
radius, so here T is sparse with about N * (2K + 1) entries, and the walk is 2^logt sparse products.
A 500 x 500 image at stride 4 (N = 15,625, radius 5): T holds 1,044,365 non-zeros (20 MB as a COO
tensor: two int64 indices and an fp32 value each), and the whole walk, the 448-channel embedding and
the temporaries included, grows the process by 0.30-0.36 GB (tests/benchmarks/bench_random_walk.py),
where one dense fp32 N x N matrix alone is 931 MB.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from wsss.models.affinity import affinity


@functools.lru_cache(maxsize=16)
def pair_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """psa's one-directional neighbour offsets (dy, dx) with dy^2 + dx^2 < radius^2.

    (0, 1..r-1) to the right plus every offset in the rows below; radius 5 gives 34 offsets.
    """
    out = [(0, dx) for dx in range(1, radius)]
    out += [
        (dy, dx)
        for dy in range(1, radius)
        for dx in range(-radius + 1, radius)
        if dy * dy + dx * dx < radius * radius
    ]
    return tuple(out)


def shifted_pairs(t: torch.Tensor, dy: int, dx: int, margin: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Views (a, b) of t[..., H, W] such that b[..., y, x] is a's neighbour at (y + dy, x + dx).

    margin 0: every origin whose neighbour is inside. margin m > 0: psa's origins for every offset
    alike (ExtractAffinityLabelInRadius, get_indices_of_pairs with m = radius - 1): none in the bottom
    m rows nor in the left and right m columns, so every offset has the same origins.
    """
    h, w = t.shape[-2:]
    if margin:
        a = t[..., : h - margin, margin : w - margin]
        return a, t[..., dy : dy + h - margin, margin + dx : margin + dx + w - 2 * margin]
    y0, y1 = 0, h - dy
    x0, x1 = max(0, -dx), min(w, w - dx)
    return t[..., y0:y1, x0:x1], t[..., y0 + dy : y1 + dy, x0 + dx : x1 + dx]


def origin_margin(pair_origins: str, radius: int, size: tuple[int, int]) -> int:
    """The margin `shifted_pairs` needs for refine.pair_origins on a grid of `size` (0 for "all", and
    for grids too small to keep any psa origin)."""
    margin = radius - 1 if pair_origins == "psa" else 0
    return margin if size[0] > margin and size[1] > 2 * margin else 0


def transition_matrix(
    embedding: torch.Tensor, radius: int, beta: float, pair_origins: str = "all"
) -> torch.Tensor:
    """Column-stochastic sparse T (N x N, N = h * w) from a (D, h, w) embedding.

    A_ij = exp(-mean|f_i - f_j|)^beta for |i - j| < radius, symmetric, with A_ii = 1 (psa's infer_aff),
    and T = A D^-1 so that every column sums to 1.
    """
    h, w = embedding.shape[-2:]
    margin = origin_margin(pair_origins, radius, (h, w))
    index = torch.arange(h * w, device=embedding.device).view(h, w)
    rows, cols, vals = [index.flatten()], [index.flatten()], [torch.ones(h * w, device=embedding.device)]
    for dy, dx in pair_offsets(radius):
        if dy >= h or abs(dx) >= w:
            continue
        fa, fb = shifted_pairs(embedding, dy, dx, margin)
        ia, ib = shifted_pairs(index, dy, dx, margin)
        a = affinity(fa[None], fb[None])[0].flatten().float() ** beta
        rows += [ia.flatten(), ib.flatten()]
        cols += [ib.flatten(), ia.flatten()]
        vals += [a, a]
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    col_sums = torch.zeros(h * w, device=embedding.device).index_add_(0, c, v)
    v = v / col_sums[c]
    return torch.sparse_coo_tensor(torch.stack([r, c]), v, (h * w, h * w), check_invariants=False).coalesce()


def random_walk(scores: torch.Tensor, transition: torch.Tensor, steps: int) -> torch.Tensor:
    """scores (C, h, w) -> scores T^steps, computed as steps sparse products (psa: steps = 2^logt).

    Row vectors times a column-stochastic T: each step replaces a pixel's scores by an affinity-weighted
    average over its neighbourhood, so a constant map stays constant.
    """
    c, h, w = scores.shape
    walk = transition.t().coalesce()  # (x T)^T = T^T x^T: rows of T^T are T's columns
    x = scores.reshape(c, h * w).t().contiguous().float()
    for _ in range(steps):
        x = torch.sparse.mm(walk, x)
    return x.t().reshape(c, h, w)


def pooled_scores(scores: torch.Tensor, stride: int) -> torch.Tensor:
    """Average-pool full-resolution (C, H, W) scores by `stride`, zero-padding to a multiple of it."""
    h, w = scores.shape[-2:]
    pad_h, pad_w = -h % stride, -w % stride
    padded = F.pad(scores, (0, pad_w, 0, pad_h))
    return F.avg_pool2d(padded[None], stride, stride)[0]
