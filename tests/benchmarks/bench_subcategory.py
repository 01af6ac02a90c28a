"""Sub-category discovery where its premise holds, with an oracle control (issue 21, item 5).

On the mixed synthetic benchmark with three coats per class, a class's images differ above all by
the other classes they hold, so per-class clustering of pooled features follows co-occurrence, not
coat (methods-review section 9). This benchmark runs the seed stage of each arm on two versions of
the same benchmark:
- mixed: `data.synthetic.variants=3` (the README's sub-category table);
- one class: `data.synthetic.one_class=true` as well: every image holds one class in one coat, so
  coats are what separates a class's images.

Arms: `cam`; `sc_cam` as the reference runs it (K 10, 3 rounds) and with K 3 (the coat count, one
round); the oracle control, one `sc_cam` round on the true coats (`seed.params.sub_labels=oracle`),
which says whether coat sub-categories help the CAMs at all; `sc_teach` (its default from-scratch
ViT teacher). Each row: CAM mIoU at the best threshold, and the last round's clusters scored by
purity / NMI against the coats and NMI against the co-occurring classes.

    python tests/benchmarks/bench_subcategory.py [--seeds 0 1] [--work DIR] [--out results.jsonl]
        [--set KEY=VALUE ...]   # e.g. data.synthetic.train=24 seed.train.epochs=1 for a smoke run

Run it alone (2 threads); rounds shared between arms are computed once (the stage store).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import wsss
from wsss.pipeline import prepare_dataset

DATASETS = {
    "mixed": ["data.synthetic.variants=3"],
    "one class": ["data.synthetic.variants=3", "data.synthetic.one_class=true"],
}
ARMS = {
    "cam": ["seed.method=cam"],
    "sc_cam (K 10, 3 rounds)": ["seed.method=sc_cam"],
    "sc_cam (K 3, 1 round)": ["seed.method=sc_cam", "seed.params.clusters=3", "seed.params.rounds=1"],
    "oracle: sc_cam round on the true coats": [
        "seed.method=sc_cam",
        "seed.params.rounds=1",
        "seed.params.sub_labels=oracle",
    ],
    "sc_teach (ViT-tiny teacher)": ["seed.method=sc_teach"],
}
SCORES = ("cam_miou_best", "seed_subcat_purity", "seed_subcat_nmi", "seed_subcat_cooc_nmi", "seed_clusters")


def run_arm(dataset: str, arm: str, seed: int, work: Path, extra: list[str]) -> dict[str, object]:
    cfg = wsss.load_config(None, [*DATASETS[dataset], *ARMS[arm], f"rng_seed={seed}", *extra])
    data = prepare_dataset(cfg, None, work / "cache")
    store = wsss.StageStore(work / "store", cache_dir=work / "cache")
    started = time.perf_counter()
    metrics = wsss.run_pipeline(cfg, data, store, until="seed").metrics()
    row: dict[str, object] = {"dataset": dataset, "arm": arm, "seed": seed}
    row |= {k: metrics[k] for k in SCORES if k in metrics}
    return row | {"seconds": round(time.perf_counter() - started, 1)}


def _cell(rows: list[dict[str, object]], key: str, percent: bool) -> str:
    values = [float(r[key]) for r in rows if key in r]  # type: ignore[arg-type]
    if not values:
        return "-"
    scale = 100 if percent else 1
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.1f}" if percent else f"{mean:.3f}"
    spread = statistics.stdev(values) * scale
    return f"{mean:.1f} ± {spread:.1f}" if percent else f"{mean:.3f} ± {spread:.3f}"


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| data | arm | CAM mIoU (best t) | purity vs coat | NMI vs coat | NMI vs co-occurring classes "
        "| clusters | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in DATASETS:
        for arm in ARMS:
            mine = [r for r in rows if r["dataset"] == dataset and r["arm"] == arm]
            if not mine:
                continue
            cells = [
                _cell(mine, "cam_miou_best", True),
                _cell(mine, "seed_subcat_purity", False),
                _cell(mine, "seed_subcat_nmi", False),
                _cell(mine, "seed_subcat_cooc_nmi", False),
                "/".join(str(int(r["seed_clusters"])) for r in mine if "seed_clusters" in r) or "-",  # type: ignore[call-overload]
                "/".join(str(r["seconds"]) for r in mine),
            ]
            lines.append(f"| {dataset} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--work", type=Path, default=Path("bench-subcategory"))
    parser.add_argument("--out", type=Path, help="append one JSON line per run")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every arm (a smoke run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for seed in args.seeds:
        for dataset in DATASETS:
            for arm in ARMS:
                row = run_arm(dataset, arm, seed, args.work, args.set)
                print(json.dumps(row), flush=True)
                if args.out:
                    with args.out.open("a") as out:
                        out.write(json.dumps(row) + "\n")
                rows.append(row)
    print(table(rows))


if __name__ == "__main__":
    main()
