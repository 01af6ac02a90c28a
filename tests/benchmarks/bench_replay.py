"""Does the shipped search pay? Search arms replayed on a recorded table of real pipelines.

python tests/benchmarks/bench_replay.py [--table tests/benchmarks/replay/synthetic] [--seeds 30]
    [--workers 4] [--budgets 24 48 96] [--arms a a2 a3 b staged] [--plots docs/figures] [--processes 2]
    [--truth fresh|mean|draw] [--staged KEY=VALUE ...] [--fidelity-only] [--json]

Arms (tuner.replay.simulate): (a) Ray Tune + OptunaSearch, FIFO; (a2) the same + stock ASHA on the
stage reports; (a3) random search; (b) `wsss-tune search` as shipped; (staged) the staged promotion
search (tuner.search.staged, on tuner.replay.jobs's rung-job loop). Each replays `--seeds` paired
seeds per cost model (`measured` compute seconds; `voc`: seed : refine : segment = 1 : 1.5 : 7.5) up
to the largest budget, in full-pipeline equivalents. Targets are the 90th and 98th percentile of the
pool's true quality (report-half val mIoU, mean over the rng_seeds every pipeline has except the
staged arm's repeat seed 1; --truth).
Printed: per arm, cost model, budget and target the ERT ratio against (a) with its 90% paired-
bootstrap CI and how many seeds reached the target; the final quality's paired non-inferiority against
(a) (margin 0.5 points); the rung fidelities (alone with --fidelity-only: a table too small to
replay searches on, such as msrc's 8 pipelines, still measures its rungs). The anytime curves go to
PLOTS/replay-<table>-<model>.png. With --json the last line is one object {arm: {cost_model: {budget:
{target: {"ert_ratio", "ci_low", "ci_high"}}}}}.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SPACES = ROOT / "search_spaces"
TARGETS = {"p90": 90.0, "p98": 98.0}
ARM_NAMES = ["a", "a2", "a3", "b", "staged"]  # tuner.replay.simulate.ARMS and JOB_ARMS


@functools.cache
def _pool(table: str, truth: str = "mean") -> Any:
    from tuner.replay.pool import Pool

    return Pool(Path(table), SPACES, truth)


def _replay(job: tuple[str, str, str, str, float, int, int, dict]) -> tuple[str, str, int, Any]:
    import optuna

    from tuner.replay.simulate import replay

    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
    table, truth, arm, model, budget, seed, workers, options = job
    return arm, model, seed, replay(arm, _pool(table, truth), model, budget, seed, workers, options)


def _plot(
    path: Path, curves: dict[str, np.ndarray], grid: np.ndarray, lines: dict[str, float], title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tuner.replay.simulate import label

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, (q25, q50, q75) in curves.items():
        line = ax.plot(grid, 100 * q50, label=f"({arm}) {label(arm)}")[0]
        ax.fill_between(grid, 100 * q25, 100 * q75, color=line.get_color(), alpha=0.15)
    for name, value in lines.items():
        ax.axhline(100 * value, color="grey", linestyle=":", linewidth=1)
        ax.annotate(name, (grid[0], 100 * value), fontsize=7, color="grey", va="bottom")
    # Before the first trial finishes the incumbent is the pool's worst: the scale starts at the median.
    ax.set_ylim(bottom=100 * lines["median pipeline"], top=100 * max(lines.values()) + 1.5)
    ax.set_xscale("log")
    ax.set_xlabel("compute (full-pipeline equivalents)")
    ax.set_ylabel("incumbent's true val mIoU (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table", type=Path, default=ROOT / "tests" / "benchmarks" / "replay" / "synthetic")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--budgets", type=float, nargs="+", default=[24, 48, 96])
    parser.add_argument("--arms", nargs="+", default=["a", "a2", "a3", "b", "staged"], choices=ARM_NAMES)
    parser.add_argument("--models", nargs="+", default=["measured", "voc"], choices=["measured", "voc"])
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "figures")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--truth",
        choices=["mean", "draw", "fresh"],
        default="fresh",
        help="true quality: the mean report-half val mIoU over the rng_seeds every pipeline has "
        "(`mean`), without rng_seed 1, which the staged arm's repeats draw (`fresh`), or rng_seed 0's "
        "alone (`draw`) (tuner.replay.pool.Pool)",
    )
    parser.add_argument(
        "--staged",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="options of the staged arm's planner (tuner.search.staged.StagedPlanner), values in JSON: "
        'e.g. gate="final" short=false etas=[2,4,3,3]',
    )
    parser.add_argument("--fidelity-only", action="store_true", help="the pool and its rungs; no arms")
    parser.add_argument("--json", action="store_true")
    return parser


def _show(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _ratios(
    pool: Any, traces: dict, args: argparse.Namespace, targets: dict[str, float], floor: float
) -> dict:
    """Print the ERT-ratio table; return {arm: {model: {budget: {target: {...}}}}}."""
    from tuner.replay.stats import ert_ratio, final_quality, non_inferiority

    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    print("| arm | cost model | budget | target | ERT ratio vs (a) [90% CI] | seeds reaching |", end="")
    print(" final quality - (a) (pt) [lower 95%] |\n|---|---|---|---|---|---|---|")
    for model in args.models:
        unit = pool.pipeline_unit(model)
        ref = [traces[("a", model)][s] for s in range(args.seeds)]
        for arm in args.arms:
            own = [traces[(arm, model)][s] for s in range(args.seeds)]
            for budget in args.budgets:
                cost = budget * unit
                finals = [[final_quality(t, cost, floor) for t in runs] for runs in (ref, own)]
                ni = non_inferiority(finals[0], finals[1], rng)
                for target, value in targets.items():
                    reach = [[t.first_reach(value, cost) for t in runs] for runs in (ref, own)]
                    r = ert_ratio(reach[0], reach[1], cost, rng)
                    cell = {
                        "ert_ratio": r.ratio,
                        "ci_low": r.ci_low,
                        "ci_high": r.ci_high,
                        "reached": r.reached,
                    }
                    out.setdefault(arm, {}).setdefault(model, {}).setdefault(f"{budget:g}", {})[target] = cell
                    print(
                        f"| ({arm}) | {model} | {budget:g} | {target} | {_show(r.ratio)} "
                        f"[{_show(r.ci_low)}, {_show(r.ci_high)}] | {r.reached}/{r.seeds} | "
                        f"{100 * ni.mean_difference:+.2f} [{100 * ni.lower_bound:+.2f}] |"
                    )
    return out


def _first_results(pool: Any, traces: dict, args: argparse.Namespace) -> None:
    """When each arm's first full-schedule result came: no incumbent exists before it."""
    for model in args.models:
        unit = pool.pipeline_unit(model)
        firsts = {
            arm: [t.points[0][0] / unit for t in traces[(arm, model)].values() if t.points]
            for arm in args.arms
        }
        shown = ", ".join(f"({a}) {np.median(v):.1f}" if v else f"({a}) -" for a, v in firsts.items())
        print(f"first full-schedule result, median over seeds ({model}, units): {shown}")


def _curves(
    pool: Any, traces: dict, args: argparse.Namespace, targets: dict[str, float], floor: float
) -> None:
    from tuner.replay.stats import anytime

    args.plots.mkdir(parents=True, exist_ok=True)
    grid = np.geomspace(0.5, max(args.budgets), 60)
    lines = {
        **{f"target {k}": v for k, v in targets.items()},
        "defaults": pool.rows[pool.design.pipelines[0]].true,
        "median pipeline": float(np.median(pool.true_qualities())),
    }
    for model in args.models:
        unit = pool.pipeline_unit(model)
        curves = {arm: anytime(list(traces[(arm, model)].values()), grid * unit, floor) for arm in args.arms}
        path = args.plots / f"replay-{args.table.name}-{model}.png"
        _plot(path, curves, grid, lines, f"{args.table.name}, cost model {model}, {args.seeds} seeds")
        print(f"anytime curves: {path}")


def _fidelity(pool: Any) -> None:
    from tuner.replay.fidelity import interaction, noise, rung_fidelity

    print(
        "\n| rung | Spearman [90% CI] | true top 10% kept at 1/2 | at 1/4 | at 1/10 |\n|---|---|---|---|---|"
    )
    for name, f in rung_fidelity(pool, np.random.default_rng(0)).items():
        kept = " | ".join(f"{f[f'keep {k}']:.2f}" for k in ("0.5", "0.25", "0.1"))
        print(f"| {name} | {f['spearman']:.2f} [{f['ci_low']:.2f}, {f['ci_high']:.2f}] | {kept} |")
    shares = interaction(pool)
    if shares is None:
        print("\nno ANOVA: the table has one upstream or one segment config")
    else:
        print("\nval sum of squares: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()))
    sd = noise(pool)
    if not sd["pipelines"]:
        print("sd over rng_seeds: no pipeline of this table is recorded at a second rng_seed")
        return
    spread = ", ".join(f"{k} {100 * sd[k]:.2f} pt" for k in ("cam", "pseudo", "val") if sd[k] is not None)
    draws = sorted({len(rows) for rows in pool.noise.values()})
    print(
        f"sd over rng_seeds ({sd['pipelines']} pipelines, {'/'.join(map(str, draws))} seeds each): {spread}"
    )


def main() -> None:
    args = _parser().parse_args()
    if "a" not in args.arms:
        raise SystemExit("bench_replay.py: --arms must include a: the ratios are against it")
    from tuner.replay.pool import PoolError

    start = time.time()
    try:
        pool = _pool(str(args.table), args.truth)
    except PoolError as exc:
        raise SystemExit(f"bench_replay.py: {exc}") from None
    true = pool.true_qualities()
    targets = {name: float(np.percentile(true, p)) for name, p in TARGETS.items()}
    floor = float(true.min())
    if args.fidelity_only:
        shown = ", ".join(f"{k} {100 * v:.1f}" for k, v in targets.items())
        defaults = pool.rows[pool.design.pipelines[0]].true
        print(f"{len(pool.rows)} pipelines in {args.table.name}; true val mIoU % median", end=" ")
        print(f"{100 * np.median(true):.2f}, defaults {100 * defaults:.1f}, {shown}")
        _fidelity(pool)
        return
    staged = _staged_options(args.staged)
    try:  # a bad value fails here, not in every replay process
        import optuna

        from tuner.search.staged import StagedPlanner

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():  # Optuna's notes on experimental sampler options
            warnings.simplefilter("ignore")
            StagedPlanner(pool.search, seed=0, **staged)
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"bench_replay.py: --staged: {exc}") from None
    jobs = [
        (str(args.table), args.truth, arm, model, max(args.budgets), seed, args.workers, staged)
        for model in args.models
        for arm in args.arms
        for seed in range(args.seeds)
    ]
    traces: dict[tuple[str, str], dict[int, Any]] = {}
    with ProcessPoolExecutor(args.processes, mp_context=get_context("spawn")) as ex:
        for arm, model, seed, trace in ex.map(_replay, jobs):
            traces.setdefault((arm, model), {})[seed] = trace
    shown = ", ".join(f"{k} {100 * v:.1f}" for k, v in targets.items())
    print(f"{len(pool.rows)} pipelines in {args.table.name}; targets (true val mIoU %) {shown}")
    print(f"{args.seeds} paired seeds, {args.workers} workers; replayed in {time.time() - start:.0f} s\n")
    out = _ratios(pool, traces, args, targets, floor)
    _first_results(pool, traces, args)
    _curves(pool, traces, args, targets, floor)
    _fidelity(pool)
    if args.json:
        print(json.dumps(_finite(out), allow_nan=False))


def _staged_options(items: list[str]) -> dict[str, Any]:
    """`--staged KEY=VALUE` as keyword arguments, each checked against StagedPlanner before any replay."""
    import inspect

    from tuner.search.staged import StagedPlanner

    # `repeat` follows the table (rng_seed 1 recorded for every pipeline or not)
    known = set(inspect.signature(StagedPlanner.__init__).parameters) - {
        "self",
        "space",
        "seed",
        "base",
        "repeat",
    }
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in known or not raw:
            raise SystemExit(
                f"bench_replay.py: --staged {item!r}: use KEY=VALUE with KEY one of {sorted(known)}"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise SystemExit(f"bench_replay.py: --staged {item!r}: the value is not JSON") from None
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def _finite(tree: Any) -> Any:
    """Infinite or undefined ratios as strings ("inf", "nan"), so that the line stays strict JSON."""
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    return tree if not isinstance(tree, float) or math.isfinite(tree) else str(tree)


if __name__ == "__main__":
    main()
