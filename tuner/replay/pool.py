"""A recorded replay table (design.json + rows.jsonl) as a pool a replayed search draws from.

- A proposal snaps to the nearest design config stage by stage: the seed config of the same method
  nearest in its knobs, then the nearest refine and segment configs (distances on [0, 1] per knob,
  log-scaled where the range is; a different categorical counts 1).
- A pipeline's true quality is its report-half val mIoU averaged over the rng_seeds recorded for every
  pipeline of the table (rng_seed 0 alone while only some are repeated: those repeats measure noise).
- Cost models: `measured` (the stages' recorded compute seconds) and `voc` (PASCAL VOC's
  seed : refine : segment = 1 : 1.5 : 7.5, search-review.md section 1.1). Budgets are counted in
  full-pipeline equivalents: the pool's mean full-pipeline cost under the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from tuner.replay.design import Design, stage_of
from tuner.spaces.ranges import Base
from tuner.spaces.space import CHOICE, SearchSpace, load_search

STAGES = ("seed", "refine", "segment")
VOC_COSTS = {"seed": 1.0, "refine": 1.5, "segment": 7.5}
COST_MODELS = ("measured", "voc")
Key = tuple[str, str, str]


class PoolError(ValueError):
    """A replay table that cannot be read: names the file and what is wrong."""


@dataclass(frozen=True)
class Row:
    key: Key
    cam: float  # best-threshold CAM mIoU: the seed stage's report
    pseudo: float  # pseudo-mask mIoU: the refine stage's report
    val: float  # search-half val mIoU: the final report
    true: float  # report-half val mIoU, mean over the rng_seeds recorded
    seconds: dict[str, float]  # compute per stage
    short: dict[int, tuple[float, float]]  # DeepLab epochs -> (search-half val, report-half val)
    short_seconds: dict[int, float]  # DeepLab epochs -> its compute


def _distance(dist: BaseDistribution, a: Any, b: Any) -> float:
    if isinstance(dist, CategoricalDistribution):
        return 0.0 if a == b else 1.0
    assert isinstance(dist, FloatDistribution | IntDistribution)
    low, high, x, y = float(dist.low), float(dist.high), float(a), float(b)
    if dist.log:
        low, high, x, y = math.log(low), math.log(high), math.log(x), math.log(y)
    return abs(x - y) / (high - low) if high > low else 0.0


def _read_rows(path: Path, design: Design) -> dict[tuple[Key, int], dict[str, Any]]:
    if not path.is_file():
        raise PoolError(f"{path}: no rows recorded (run tests/benchmarks/record_replay.py)")
    rows: dict[tuple[Key, int], dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            key = (str(raw["pipeline"][0]), str(raw["pipeline"][1]), str(raw["pipeline"][2]))
            rng_seed = int(raw["rng_seed"])
            for name in ("cam_miou_best", "pseudo_miou"):
                float(raw["metrics"][name])
            float(raw["val"]["search"]), float(raw["val"]["report"])
            [float(raw["compute"][stage]) for stage in STAGES]
            [(float(x["compute"]), float(x["val"]["search"])) for x in raw["short"].values()]
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise PoolError(f"{path}:{number}: not a replay row ({type(exc).__name__}: {exc})") from None
        if key[0] not in design.seeds or key[1] not in design.refines or key[2] not in design.segments:
            raise PoolError(f"{path}:{number}: pipeline {list(key)} is not in the design")
        rows[(key, rng_seed)] = raw
    return rows


TRUTHS = ("mean", "draw", "fresh")
REPEAT_SEED = 1  # the rng_seed the staged search's repeat rung draws (tuner.replay.jobs)


class Pool:
    """`truth`: what a pipeline's true quality is: `mean`, over the rng_seeds every pipeline has (a
    config's expected quality); `draw`, rng_seed 0's alone (the held-out score a real search's trial
    gets, whose luck its search-half score shares: what a real run is compared on); `fresh`, the mean
    without REPEAT_SEED, so that an arm that repeats finalists at that rng_seed is not scored on the
    draw it selected with (every arm sees rng_seed 0's search half alike)."""

    def __init__(self, folder: Path, spaces_dir: Path, truth: str = "mean") -> None:
        if truth not in TRUTHS:
            raise PoolError(f"truth {truth!r}: choose from {', '.join(TRUTHS)}")
        self.folder = Path(folder)
        try:
            self.design = Design.load(self.folder / "design.json")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PoolError(f"{self.folder / 'design.json'}: {exc}") from None
        meta = self.design.meta
        self.search: SearchSpace = load_search(
            [spaces_dir / f for f in meta["space_files"]], Base(meta["base"])
        )
        self.dists = self.search.distributions()
        recorded = _read_rows(self.folder / "rows.jsonl", self.design)
        missing = [p for p in self.design.pipelines if (p, 0) not in recorded]
        if missing:
            raise PoolError(
                f"{self.folder / 'rows.jsonl'}: {len(missing)} of {len(self.design.pipelines)} pipelines "
                f"not recorded yet (e.g. {list(missing[0])}); run record_replay.py again to go on"
            )
        seeds = {key: {k for (p, k) in recorded if p == key} for key in self.design.pipelines}
        # True quality averages the rng_seeds every pipeline has: a pipeline with extra draws would
        # otherwise be ranked on a steadier estimate than its peers, which only its extras can say.
        self.common_seeds = sorted(set.intersection(*seeds.values()))
        truth_seeds = {
            "mean": self.common_seeds,
            "draw": [0],
            "fresh": [k for k in self.common_seeds if k != REPEAT_SEED] or [0],
        }[truth]
        self.rows = {key: self._row(key, recorded, truth_seeds) for key in self.design.pipelines}
        self.noise = {
            key: [recorded[(key, k)] for (p, k) in recorded if p == key]
            for key in {p for (p, k) in recorded if k}
        }

    @staticmethod
    def _row(key: Key, recorded: dict[tuple[Key, int], dict[str, Any]], seeds: list[int]) -> Row:
        raw = recorded[(key, 0)]
        reports = [recorded[(key, k)]["val"]["report"] for k in seeds]
        return Row(
            key=key,
            cam=float(raw["metrics"]["cam_miou_best"]),
            pseudo=float(raw["metrics"]["pseudo_miou"]),
            val=float(raw["val"]["search"]),
            true=float(np.mean(reports)),
            seconds={stage: float(raw["compute"][stage]) for stage in STAGES},
            short={
                int(e): (float(s["val"]["search"]), float(s["val"]["report"]))
                for e, s in raw["short"].items()
            },
            short_seconds={int(e): float(s["compute"]) for e, s in raw["short"].items()},
        )

    def draw(self, key: Key, rng_seed: int) -> tuple[float, dict[str, float]] | None:
        """Pipeline `key` recorded at `rng_seed`: (search-half val mIoU, compute per stage), or None."""
        raw = next((r for r in self.noise.get(key, []) if int(r["rng_seed"]) == rng_seed), None)
        if raw is None:
            return None
        return float(raw["val"]["search"]), {stage: float(raw["compute"][stage]) for stage in STAGES}

    def snap(self, params: dict[str, Any]) -> Key:
        """The design pipeline nearest to a proposal (`space` and the knobs it suggested)."""
        method = params.get(CHOICE, self.search.spaces[0].name)
        candidates = {
            "seed": {i: c for i, c in self.design.seeds.items() if c.get(CHOICE, method) == method},
            "refine": self.design.refines,
            "segment": self.design.segments,
        }
        picked = []
        for stage in STAGES:
            names = [n for n in params if stage_of(n) == stage and n != CHOICE and n in self.dists]
            best = min(
                candidates[stage],
                key=lambda i: sum(
                    _distance(self.dists[n], params[n], candidates[stage][i][n]) for n in names
                ),
            )
            picked.append(best)
        return (picked[0], picked[1], picked[2])

    def stage_cost(self, key: Key, stage: str, model: str) -> float:
        if model == "voc":
            return VOC_COSTS[stage]
        if model == "measured":
            return self.rows[key].seconds[stage]
        raise PoolError(f"cost model {model!r}: choose from {', '.join(COST_MODELS)}")

    def pipeline_unit(self, model: str) -> float:
        """One full-pipeline equivalent under `model`: the pool's mean full-pipeline cost."""
        return float(np.mean([sum(self.stage_cost(k, s, model) for s in STAGES) for k in self.rows]))

    def full_epochs(self) -> int:
        """DeepLab's full schedule in the table's base config."""
        return int(Base(self.design.meta["base"]).value("segment.train.epochs", None))

    def true_qualities(self) -> np.ndarray:
        return np.array([row.true for row in self.rows.values()])
