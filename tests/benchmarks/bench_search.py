"""Does the shipped search pay? The same trial budget over the same two-method space, 3 search seeds:

(a) plain Ray Tune + OptunaSearch (Ray's searcher, TPE seeded and multivariate, no scheduler): every
    trial computes every stage in a store of its own;
(b) `wsss-tune search` as shipped: stage-aware TPE, ASHA at the stage boundaries, the shared store.

python tests/benchmarks/bench_search.py [--trials 12] [--seeds 0 1 2] [--train 80] [--val 24] [--size 96]
    [--concurrency 2] [--workdir DIR]

Per arm and seed it prints: total stage compute seconds, best val mIoU, the compute spent until a
trial first came within 0.5 points of (a)'s best (in the order trials finished), and the trials that
reused a stage. Goal: (b) reaches (a)'s best with >= 3x less compute on average, and its best is not
worse. Run it by hand on an otherwise idle machine (not in CI).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search.optuna import OptunaSearch

import wsss
from tuner.search.driver import run_search
from tuner.search.options import SearchOptions
from tuner.spaces.space import Base, load_search
from tuner.trial.trainable import trial_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
# A short schedule, so that 2 x 3 x 12 pipelines fit an hour or two on a 2-core CPU.
BASE = {
    "seed": {"train": {"epochs": 6, "batch_size": 8, "crop_size": 96, "resize_long": [80, 112]}},
    "refine": {"train": {"epochs": 2, "batch_size": 8, "crop_size": 96, "resize_long": [80, 112]}},
    "segment": {"train": {"epochs": 4, "batch_size": 8, "crop_size": 96, "resize_long": [80, 112]}},
    "runtime": {"progress": False},
}


def plain_trial(config: dict[str, Any], search: Any, data_dir: str, cache: str, base_file: str) -> None:
    """Arm (a): the whole pipeline in a store of its own (no reuse), reporting once at the end."""
    settings = type("S", (), {"threads": 1, "base": wsss.config_source(base_file)})()
    _, cfg = trial_config(search, settings, config)  # type: ignore[arg-type]
    data = wsss.prepare_dataset(cfg, data_dir, Path(cache))
    with tempfile.TemporaryDirectory() as store:
        result = wsss.run_pipeline(cfg, data, wsss.StageStore(store, Path(store) / "cache"))
    compute = sum(o.compute_seconds for o in result.stages.values())
    tune.report({"val_miou": result.summary()["val_miou"], "compute_seconds": compute, "end": time.time()})


def run_plain(
    seed: int, trials: int, concurrency: int, data_dir: str, cache: str, base_file: str
) -> list[dict]:
    search = load_search([SPACES / "cam.yaml", SPACES / "mixup.yaml"], Base(wsss.config_source(base_file)))
    searcher = OptunaSearch(
        space=search.define,
        metric="val_miou",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True),
    )
    trainable = tune.with_resources(
        tune.with_parameters(plain_trial, search=search, data_dir=data_dir, cache=cache, base_file=base_file),
        {"cpu": 1},
    )
    ray.init(num_cpus=concurrency, include_dashboard=False, logging_level=logging.WARNING)
    try:
        results = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=trials,
                max_concurrent_trials=concurrency,
                metric="val_miou",
                mode="max",
            ),
            run_config=tune.RunConfig(storage_path=str(Path(cache).parent / "plain-tune"), verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    rows = [r.metrics for r in results if r.metrics and "val_miou" in r.metrics]
    return [
        {"val": r["val_miou"], "compute": r["compute_seconds"], "end": r["end"], "reused": False}
        for r in rows
    ]


def run_shipped(
    seed: int, trials: int, concurrency: int, data_dir: str, work: Path, base_file: str
) -> list[dict]:
    experiment = f"bench-shipped-{seed}"
    options = SearchOptions(
        space_files=(str(SPACES / "cam.yaml"), str(SPACES / "mixup.yaml")),
        samples=trials,
        experiment=experiment,
        data=data_dir,
        concurrency=concurrency,
        cpus_per_trial=1,
        storage=str(work / "storage"),
        seed=seed,
        config=base_file,
        cache_dir=str(work / "cache"),
    )
    run_search(options)
    client = MlflowClient(f"sqlite:///{(work / 'storage' / 'mlflow.db').absolute()}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`wsss.role` = 'trial'")
    return [
        {
            "val": r.data.metrics.get("val_miou"),
            "compute": r.data.metrics.get("compute_seconds", 0.0),
            "end": r.info.end_time / 1000,
            "reused": r.data.tags.get("wsss.reused", "-") != "-",
        }
        for r in runs
    ]


def summarise(rows: list[dict], target: float | None) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: r["end"])
    vals = [r["val"] for r in rows if r["val"] is not None]
    spent, reached = 0.0, None
    for r in rows:
        spent += r["compute"]
        if reached is None and target is not None and r["val"] is not None and r["val"] >= target - 0.005:
            reached = spent
    return {
        "compute": sum(r["compute"] for r in rows),
        "best": max(vals) if vals else None,
        "to_target": reached,
        "reused": sum(r["reused"] for r in rows),
        "trials": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--val", type=int, default=24)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    if not data_dir.exists():
        wsss.generate_synthetic(
            wsss.SynthSpec(train=args.train, val=args.val, size=args.size, seed=0), data_dir
        )
    base_file = work / "base.yaml"
    base_file.write_text(yaml.safe_dump(BASE))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    table = []
    for seed in args.seeds:
        plain = run_plain(
            seed,
            args.trials,
            args.concurrency,
            str(data_dir),
            str(work / f"plain-{seed}" / "cache"),
            str(base_file),
        )
        a = summarise(plain, None)
        a = summarise(plain, a["best"])
        shipped_work = work / f"shipped-{seed}"
        shutil.rmtree(shipped_work, ignore_errors=True)
        b = summarise(
            run_shipped(seed, args.trials, args.concurrency, str(data_dir), shipped_work, str(base_file)),
            a["best"],
        )
        table.append({"seed": seed, "plain": a, "shipped": b})
        print(json.dumps(table[-1]), flush=True)
    print(
        f"\n{args.trials} trials per search, {args.train} train / {args.val} val images "
        f"of {args.size} px, cam + mixup"
    )
    print(
        "| seed | arm | stage compute (s) | best val mIoU | compute to (a)'s best -0.5 (s) "
        "| trials reusing a stage |"
    )
    print("|---|---|---|---|---|---|")
    for row in table:
        for arm, name in (("plain", "(a) Ray Tune + OptunaSearch"), ("shipped", "(b) wsss-tune search")):
            r = row[arm]
            to = f"{r['to_target']:.0f}" if r["to_target"] is not None else "not reached"
            best = f"{100 * r['best']:.1f}" if r["best"] is not None else "-"
            reused = f"{r['reused']} / {r['trials']}"
            print(f"| {row['seed']} | {name} | {r['compute']:.0f} | {best} | {to} | {reused} |")
    ratios = [
        row["plain"]["to_target"] / row["shipped"]["to_target"]
        for row in table
        if row["shipped"]["to_target"] and row["plain"]["to_target"]
    ]
    if ratios:
        print(
            f"compute ratio (a)/(b) to reach (a)'s best: {sum(ratios) / len(ratios):.2f}x, "
            f"mean over {len(ratios)} seed(s)"
        )


if __name__ == "__main__":
    main()
