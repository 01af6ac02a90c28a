"""Random-walk time and peak memory for one image (goal: a 500 x 500 image well under 2 GB).

    python tests/benchmarks/bench_random_walk.py [--side 500] [--stride 4] [--logt 8]
Each setting runs in a fresh process so that peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, time, torch
from wsss.ops.random_walk import random_walk, transition_matrix
torch.set_num_threads(2)
side, stride, logt, radius = {side}, {stride}, {logt}, {radius}
n = -(-side // stride)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
emb = torch.randn(448, n, n)
start = time.perf_counter()
t = transition_matrix(emb, radius=radius, beta=8.0)
out = random_walk(torch.rand(21, n, n), t, 2 ** logt)
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
dense_mb = (n * n) ** 2 * 4 / 2**20
print(json.dumps({{"nodes": n * n, "nnz": int(t._nnz()), "seconds": seconds,
                  "grown": grown, "dense": dense_mb}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=500)
    parser.add_argument("--logt", type=int, default=8)
    parser.add_argument("--radius", type=int, default=5)
    args = parser.parse_args()
    for stride in (8, 4):
        code = CHILD.format(side=args.side, stride=stride, logt=args.logt, radius=args.radius)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        r = json.loads(run.stdout)
        print(
            f"{args.side}x{args.side} at stride {stride}: {r['nodes']} nodes, {r['nnz']} non-zeros, "
            f"{2**args.logt} steps in {r['seconds']:.2f}s, peak RSS growth {r['grown']:.0f} MB "
            f"(one dense fp32 N x N matrix alone: {r['dense']:.0f} MB)"
        )


if __name__ == "__main__":
    main()
