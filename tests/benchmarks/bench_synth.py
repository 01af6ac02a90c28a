"""Synthetic benchmark generation speed on one core (goal: >= 200 images/s, PNG + JPEG written).

python tests/benchmarks/bench_synth.py [--images 500] [--size 128]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the goal states

from wsss.data.synth import SynthSpec, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rates = []
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            spec = SynthSpec(train=args.images * 4 // 5, val=args.images // 5, size=args.size, seed=r)
            start = time.perf_counter()
            generate(spec, f"{tmp}/data")
            rates.append(args.images / (time.perf_counter() - start))
    print(
        f"synthetic generation, {args.size} px, 1 core: {max(rates):.0f} images/s best of {args.repeats} "
        f"(all: {', '.join(f'{r:.0f}' for r in rates)})"
    )


if __name__ == "__main__":
    main()
