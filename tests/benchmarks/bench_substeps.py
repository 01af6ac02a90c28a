"""What the sub-stage keys save (issue 24 item 1): the compute of a seed or refine stage whose knob
change reuses its cached steps, beside the same stage computed on an empty store.

    python tests/benchmarks/bench_substeps.py [--data DIR --preset NAME] [--threads 2] [--repeats 3]

Default: the synthetic replay table's set and schedule (tests/benchmarks/replay/synthetic/design.json:
the generated set and the short schedules it was recorded with). For each change (a walk knob,
AffinityNet's learning rate, the CAM scales), the stage's compute seconds with the earlier run's
steps in the store, then from scratch; and the bytes the cached steps add to the store. Run it
alone (a second torch process slows both).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import wsss

CHANGES = {
    "refine walk (refine.beta, logt, rw_alpha)": ["refine.beta=8.0", "refine.logt=4", "refine.rw_alpha=32.0"],
    "AffinityNet training (refine.train.lr)": ["refine.train.lr=0.1"],
    "CAM inference (seed.scales)": ["seed.scales=[1.0, 0.5]"],
}


DESIGN = Path(__file__).resolve().parent / "replay" / "synthetic" / "design.json"


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="VOC-layout dataset (default: the synthetic benchmark set)")
    parser.add_argument("--preset", help="base config (default: the built-in defaults)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="measurements per change (median)")
    args = parser.parse_args()
    base = [f"runtime.threads={args.threads}", "runtime.progress=false"]
    with tempfile.TemporaryDirectory(prefix="wsss-substeps-") as tmp:
        work = Path(tmp)
        cache = work / "cache"
        source: Any = args.preset
        data_dir = args.data
        if data_dir is None:  # the replay table's generated set and schedule
            meta = json.loads(DESIGN.read_text())["meta"]
            source, data_dir = meta["base"], work / "data"
            wsss.generate_synthetic(wsss.SynthSpec(**meta["data"]), data_dir)
        args.preset = source
        data = wsss.prepare_dataset(wsss.load_config(source, base), data_dir, cache)
        root = work / "store"
        start = time.perf_counter()
        # A throwaway run first: the dataset's decoded-image cache and torch's kernels warm up there,
        # not inside the first measured stage.
        wsss.run_pipeline(wsss.load_config(source, base), data, wsss.StageStore(work / "warm", work / "c"))
        print(f"warm-up (whole pipeline): {time.perf_counter() - start:.1f} s wall")
        first = wsss.run_pipeline(
            wsss.load_config(source, base), data, wsss.StageStore(root, work / "c"), until="refine"
        ).stages
        seed_s, refine_s = first["seed"].compute_seconds, first["refine"].compute_seconds
        print(f"base run: seed {seed_s:.1f} s, refine {refine_s:.1f} s")
        steps = {s: _bytes(root / s) for s in ("seed_round", "refine_step")}
        stages = {s: _bytes(root / s) for s in ("seed", "refine")}
        print(f"cached steps add {steps} bytes beside the stages' {stages}")
        print("| change | stage | compute with cached steps (s) | from scratch (s) | ratio |")
        print("|---|---|---|---|---|")
        for n, (label, overrides) in enumerate(CHANGES.items()):
            cfg = wsss.load_config(source, [*base, *overrides])
            stage = "seed" if overrides[0].startswith("seed.") else "refine"
            seconds: dict[str, list[float]] = {"reused": [], "fresh": []}
            for repeat in range(args.repeats):  # each repeat on its own copy of the base run's store
                copy = work / f"copy-{n}-{repeat}"
                shutil.copytree(root, copy)
                stores = {"reused": copy, "fresh": work / f"fresh-{n}-{repeat}"}
                for kind in sorted(stores, reverse=bool(repeat % 2)):  # alternate which goes first
                    store = wsss.StageStore(stores[kind], work / "c")
                    outcome = wsss.run_pipeline(cfg, data, store, until="refine").stages[stage]
                    assert not outcome.cached
                    seconds[kind].append(outcome.compute_seconds)
            reused, fresh = statistics.median(seconds["reused"]), statistics.median(seconds["fresh"])
            print(f"| {label} | {stage} | {reused:.2f} | {fresh:.2f} | {fresh / reused:.1f}x |")


if __name__ == "__main__":
    main()
