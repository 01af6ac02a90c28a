from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from wsss.ops.random_walk import (
    origin_margin,
    pair_offsets,
    pooled_scores,
    random_walk,
    shifted_pairs,
    transition_matrix,
)


def test_psa_offsets_for_radius_5() -> None:
    offsets = pair_offsets(5)
    assert len(offsets) == 34  # psa: 34 one-directional neighbours within radius 5
    assert all(dy * dy + dx * dx < 25 and (dy > 0 or dx > 0) for dy, dx in offsets)
    assert len(set(offsets)) == 34 and not {(-dy, -dx) for dy, dx in offsets} & set(offsets)


def test_transition_columns_sum_to_one_and_are_symmetric_before_normalising() -> None:
    torch.manual_seed(0)
    embedding = torch.randn(8, 7, 5)
    t = transition_matrix(embedding, radius=3, beta=4.0).to_dense()
    assert t.shape == (35, 35)
    assert torch.allclose(t.sum(dim=0), torch.ones(35), atol=1e-5)
    assert (t >= 0).all()
    # T = A D^-1 with A symmetric: T * D is symmetric
    col_scale = 1.0 / t.diagonal()  # A_ii = 1 so T_ii = 1 / d_i
    a = t * col_scale[None, :]
    assert torch.allclose(a, a.t(), atol=1e-4)
    # no pairs beyond the radius: pixels (0,0) and (0,4) are 4 apart along a row
    assert t[0, 4] == 0 and t[0, 2] > 0


def test_walk_keeps_shape_and_constants_and_matches_dense_powers() -> None:
    torch.manual_seed(1)
    embedding = torch.randn(16, 6, 9)
    t = transition_matrix(embedding, radius=4, beta=2.0)
    constant = torch.full((3, 6, 9), 0.7)
    assert torch.allclose(random_walk(constant, t, 16), constant, atol=1e-5)
    scores = torch.rand(3, 6, 9)
    walked = random_walk(scores, t, 4)
    assert walked.shape == scores.shape
    dense = scores.reshape(3, -1) @ torch.linalg.matrix_power(t.to_dense(), 4)  # psa: cam_vec @ T^(2^logt)
    assert torch.allclose(walked.reshape(3, -1), dense, atol=1e-5)


def test_walk_stays_inside_a_low_affinity_boundary() -> None:
    embedding = torch.zeros(4, 8, 8)
    embedding[:, :, 4:] = 10.0  # two regions with affinity exp(-10) between them
    t = transition_matrix(embedding, radius=3, beta=8.0)
    scores = torch.zeros(2, 8, 8)
    scores[1, 3, 1] = 1.0  # a seed in the left region
    scores[0] = 0.01
    walked = random_walk(scores, t, 64)
    assert walked[1, :, :4].min() > walked[0, :, :4].max()  # the seed fills the left region...
    assert walked[1, :, 4:].max() < 1e-3  # ...and does not cross


def test_pooled_scores_pad_to_the_stride() -> None:
    pooled = pooled_scores(torch.ones(2, 10, 17), 8)
    assert pooled.shape == (2, 2, 3)
    assert pooled[0, 0, 0] == 1 and pooled[0, 1, 2] == pytest.approx(2 * 1 / 64)


def test_memory_bounded_for_a_500x500_image() -> None:
    """psa's dense N x N walk needs several GB at stride 4 on 500 x 500; the sparse walk stays small."""
    code = textwrap.dedent(
        """
        import json, resource, torch
        from wsss.ops.random_walk import random_walk, transition_matrix
        torch.set_num_threads(1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        emb = torch.randn(448, 125, 125)  # a 500 x 500 image on the stride-4 grid: N = 15,625
        t = transition_matrix(emb, radius=5, beta=8.0)
        out = random_walk(torch.rand(21, 125, 125), t, 16)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        grown_mb = (after - before) / 1024
        print(json.dumps({"grown_mb": grown_mb, "nnz": int(t._nnz()), "shape": list(out.shape)}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["shape"] == [21, 125, 125]
    assert info["nnz"] < 15_625 * 69 + 1
    # the embedding alone is 28 MB; a dense fp32 N x N transition would be 977 MB per copy
    assert info["grown_mb"] < 600


def test_the_quoted_size_of_t_is_what_it_is() -> None:
    """The module docstring and docs/benchmarks.md quote T's size for a 500 x 500 image at stride 4
    (radius 5): computed here, and the two texts must agree with it (and so with each other)."""
    from pathlib import Path

    import wsss.ops.random_walk as module

    t = transition_matrix(torch.randn(2, 125, 125), radius=5, beta=8.0).coalesce()
    nnz = int(t._nnz())
    size_mb = nnz * (2 * 8 + 4) / 2**20
    quoted = f"{nnz:,} non-zeros ({size_mb:.0f} MB"
    benchmarks = (Path(__file__).resolve().parents[3] / "docs" / "benchmarks.md").read_text()
    assert quoted in " ".join(module.__doc__.split())
    assert quoted in " ".join(benchmarks.split())


def _psa_pairs(radius: int, h: int, w: int) -> set[tuple[int, int]]:
    """psa's get_indices_of_pairs (Ahn & Kwak's code), index arithmetic written out for a h x w grid."""
    floor = radius - 1
    full = np.arange(h * w).reshape(h, w)
    origins = full[: h - floor, floor : w - floor].reshape(-1)
    pairs = set()
    for dy, dx in pair_offsets(radius):
        to = full[dy : dy + h - floor, floor + dx : floor + dx + w - 2 * floor].reshape(-1)
        pairs |= set(zip(origins.tolist(), to.tolist(), strict=True))
    return pairs


def test_psa_pair_origins_are_psas_pairs() -> None:
    h, w, radius = 7, 9, 3
    index = torch.arange(h * w).view(h, w)
    margin = origin_margin("psa", radius, (h, w))
    ours = set()
    every = set()
    for dy, dx in pair_offsets(radius):
        a, b = shifted_pairs(index, dy, dx, margin)
        ours |= set(zip(a.flatten().tolist(), b.flatten().tolist(), strict=True))
        a, b = shifted_pairs(index, dy, dx)
        every |= set(zip(a.flatten().tolist(), b.flatten().tolist(), strict=True))
    assert ours == _psa_pairs(radius, h, w)
    assert ours < every and (0, 1) in every - ours  # psa has no pair starting in the left margin
    assert origin_margin("all", radius, (h, w)) == 0 and origin_margin("psa", radius, (2, 3)) == 0


def test_the_walk_with_psa_origins_stays_stochastic() -> None:
    emb = torch.randn(4, 10, 12)
    everything = transition_matrix(emb, radius=4, beta=2.0)
    psa = transition_matrix(emb, radius=4, beta=2.0, pair_origins="psa")
    assert psa._nnz() < everything._nnz()
    assert torch.allclose(torch.sparse.sum(psa, dim=0).to_dense(), torch.ones(120), atol=1e-5)
