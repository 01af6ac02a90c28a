"""Validate the replay benchmark against real searches: each arm run for real, a few seeds each, on the
replay table's own synthetic set, and its ERT ratio against (a) set beside the replay's.

python tests/benchmarks/validate_replay.py [--table tests/benchmarks/replay/synthetic] [--seeds 0 1 2]
    [--arms a a2 a3 b staged] [--budget 24] [--concurrency 2] [--b-samples 50] [--replay-seeds 30]
    [--workdir DIR] [--json]

The real runs:
- Data: the table's synthetic spec generated again, val split by tuner.replay.design.val_halves into
  `val_search` (data.val_split: what trials report) and `val_report` (data.holdout_split: what no
  search sees, scored by the same DeepLab as `holdout_miou`); the table's base config.
- Arms (a), (a2), (a3): Ray Tune with the very searcher and scheduler objects the replay builds
  (tuner.replay.simulate.ARMS), each trial a whole pipeline in a store of its own, reporting after
  every stage what the replay reports (CAM mIoU at the best threshold, pseudo-mask mIoU, val mIoU).
  Arm (b): `wsss-tune search` as shipped (tuner.search.driver.run_search), at most --b-samples trials.
  Arm (staged): `wsss-tune search --searcher staged --budget` at the budget below (in compute
  seconds), one Tune trial per rung job; its incumbent is the planner's (best mean over full-schedule
  draws), its quality the held-out score of that configuration's full-rung draw.
- Budget: full-pipeline equivalents of compute, the unit being the mean compute of arm (a)'s
  pipelines (1 thread each, --concurrency at once: not the table's 2-thread seconds). Arm (a) runs
  first; the later plain arms stop when their trials have spent the budget; every arm's trace is cut
  at it (a search that ends earlier is scored on what it ran).
- Scoring (tuner.replay.observed, tuner.replay.stats): the incumbent is the best finished trial by
  its search-half val mIoU, its quality its held-out mIoU (one training draw, so the replay's truth
  here is rng_seed 0's report half, not the mean over seeds); ERT to the table's 90th and 98th
  percentile targets, the ratio ERT(a) / ERT(arm) over the real seeds, beside the replay's ratio
  with its 90% CI on --replay-seeds seeds at the same workers and budget (cost model `measured`).

Run it alone on an otherwise idle machine: about 10 minutes a search on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import real_searches
from real_searches import SPACES, prepare, read_jobs, read_reports, run_plain, run_shipped

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {"p90": 90.0, "p98": 98.0}

log = logging.getLogger("validate_replay")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table", type=Path, default=ROOT / "tests" / "benchmarks" / "replay" / "synthetic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["a", "a2", "a3", "b"])
    parser.add_argument("--budget", type=float, default=24.0, help="full-pipeline equivalents")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--b-samples", type=int, default=50, help="trial cap of the shipped search")
    parser.add_argument("--replay-seeds", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/validate-replay"))
    parser.add_argument("--json", action="store_true")
    return parser


def _real_runs(args: argparse.Namespace, pool: Any) -> dict[str, dict[int, list[Any]]]:
    """Run (or read back, from --workdir) every real search: arm -> seed -> its reports."""
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    data_dir, base = prepare(pool, work)
    (work / "space_files.json").write_text(json.dumps(pool.design.meta["space_files"]))
    reports: dict[str, dict[int, list[Any]]] = {}
    unit: float | None = None
    for arm in ["a", *[a for a in args.arms if a != "a"]]:
        for seed in args.seeds:
            done = work / f"done-{arm}-{seed}.json"
            if not done.exists():
                start = time.time()
                if arm == "b":
                    folder = run_shipped(seed, base, data_dir, work, args.b_samples, args.concurrency)
                elif arm == "staged":
                    budget_seconds = args.budget * (unit or math.nan)
                    folder = run_shipped(
                        seed, base, data_dir, work, 100_000, args.concurrency, budget_seconds
                    )
                else:
                    samples = math.ceil(1.2 * args.budget) if arm == "a" else 100 * math.ceil(args.budget)
                    budget = None if arm == "a" else args.budget * (unit or math.nan)
                    folder = run_plain(
                        arm, seed, pool, base, data_dir, work, budget, samples, args.concurrency
                    )
                done.write_text(json.dumps({"folder": str(folder), "seconds": time.time() - start}))
                log.info("%s seed %d: %.0f s", arm, seed, time.time() - start)
            folder = Path(json.loads(done.read_text())["folder"])
            reports.setdefault(arm, {})[seed] = read_jobs(folder) if arm == "staged" else read_reports(folder)
        if arm == "a":
            finished = [r.compute for runs in reports["a"].values() for r in runs if r.iteration == 3]
            unit = float(np.mean(finished))
            (work / "unit.json").write_text(json.dumps({"unit_seconds": unit, "pipelines": len(finished)}))
    return reports


def _compare(
    arm: str, real: dict, simulated: dict, targets: dict[str, float], costs: tuple[float, float], unit: float
) -> dict[str, Any]:
    """One arm's rows: per target, the real ERT ratio against (a) beside the replay's ratio and CI."""
    from tuner.replay.stats import ert, ert_ratio

    cost, replay_cost = costs
    rng = np.random.default_rng(0)
    out = {}
    for name, value in targets.items():
        reach = {a: [t.first_reach(value, cost) for t in real[a]] for a in ("a", arm)}
        own, ref = ert(reach[arm], cost), ert(reach["a"], cost)
        ratio = math.nan if math.isinf(own) and math.isinf(ref) else (0.0 if math.isinf(own) else ref / own)
        sim = {a: [t.first_reach(value, replay_cost) for t in simulated[a]] for a in ("a", arm)}
        r = ert_ratio(sim["a"], sim[arm], replay_cost, rng)
        out[name] = {
            "real_ratio": ratio,
            "real_ert_units": own / unit,
            "real_reached": sum(x is not None for x in reach[arm]),
            "replay_ratio": r.ratio,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "inside": bool(r.ci_low <= ratio <= r.ci_high),
        }
    return out


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "a" not in args.arms:
        raise SystemExit("validate_replay.py: --arms must include a: the ratios are against it")
    import optuna
    from ray import cloudpickle as ray_cloudpickle

    from tuner.replay.observed import observed_job_trace, observed_trace
    from tuner.replay.pool import Pool, PoolError
    from tuner.replay.simulate import replay
    from tuner.replay.stats import final_quality

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ray_cloudpickle.register_pickle_by_value(real_searches)  # Tune's workers cannot import it
    # A real trial's held-out score is one training draw, whose luck its search-half score shares: the
    # replay is compared on the same footing (truth `draw`: rng_seed 0's report half).
    try:
        pool = Pool(args.table, SPACES, truth="draw")
    except PoolError as exc:
        raise SystemExit(f"validate_replay.py: {exc}") from None
    true = pool.true_qualities()
    targets = {name: float(np.percentile(true, p)) for name, p in TARGETS.items()}
    reports = _real_runs(args, pool)
    unit = json.loads((args.workdir / "unit.json").read_text())["unit_seconds"]
    costs = (args.budget * unit, args.budget * pool.pipeline_unit("measured"))
    real = {
        arm: [
            observed_job_trace(reports[arm][s], pool.search.mode)
            if arm == "staged"
            else observed_trace(reports[arm][s], 3, pool.search.mode)
            for s in args.seeds
        ]
        for arm in args.arms
    }
    simulated = {
        arm: [
            replay(arm, pool, "measured", args.budget, s, args.concurrency) for s in range(args.replay_seeds)
        ]
        for arm in args.arms
    }
    floor = float(true.min())
    print(f"unit {unit:.1f} s: arm (a)'s mean pipeline, 1 thread, {args.concurrency} at once")
    shown = ", ".join(f"{k} {100 * v:.1f}" for k, v in targets.items())
    print(f"budget {args.budget:g} units; targets (true val mIoU %): {shown}\n")
    print("| arm | target | real: seeds reaching | real ERT (units) | real ratio vs (a) |", end="")
    print(" replay ratio [90% CI] | inside | real final quality (%) | replay final, median |")
    print("|---|---|---|---|---|---|---|---|---|")
    out: dict[str, Any] = {}
    for arm in args.arms:
        out[arm] = _compare(arm, real, simulated, targets, costs, unit)
        finals = [100 * final_quality(t, costs[0], floor) for t in real[arm]]
        final = f"{np.mean(finals):.1f} ({', '.join(f'{f:.1f}' for f in finals)})"
        replay_final = np.median([100 * final_quality(t, costs[1], floor) for t in simulated[arm]])
        for name, row in out[arm].items():
            print(
                f"| ({arm}) | {name} | {row['real_reached']}/{len(args.seeds)} | "
                f"{row['real_ert_units']:.1f} | {row['real_ratio']:.2f} | "
                f"{row['replay_ratio']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}] | "
                f"{'yes' if row['inside'] else 'no'} | {final} | {replay_final:.1f} |"
            )
    for arm in args.arms:
        print(f"({arm}) real trials per search: {[t.trials for t in real[arm]]}")
    if args.json:
        print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
