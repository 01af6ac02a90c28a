"""The staged search replayed on a pool: rung jobs on K workers, a simulated clock, asked of and told to
the Tune Searcher a real search uses (tuner.search.job_searcher.StagedSearcher).

Each job runs its configuration up to its rung; a stage some earlier job computed with the same knobs
(and rng_seed) is read from the store at no cost, so a promotion pays only what it is missing. A job's
configuration snaps to the pool's nearest pipeline (tuner.replay.pool), whose recorded values it
reports: CAM mIoU at the best threshold (rung 0), pseudo-mask mIoU (1), search-half val mIoU of
DeepLab at the longest short schedule every row holds (2) and at the full one (3), and of the whole
pipeline at rng_seed 1 (4, its stages all computed again, with that draw's recorded compute).
Under the `voc` cost model a short DeepLab costs its share of the full schedule.

The trace follows the planner's incumbent; its true quality is the snapped pipeline's.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from tuner.replay.loop import Clock, store_keys
from tuner.replay.pool import REPEAT_SEED, STAGES, VOC_COSTS, Key, Pool
from tuner.replay.trace import Trace
from tuner.search.job_searcher import JOB_KEY, METRIC, StagedSearcher
from tuner.search.staged import Job, StagedPlanner
from tuner.spaces.ranges import Base


def replay_staged(
    pool: Pool, model: str, budget_units: float, seed: int, workers: int = 4, **options: Any
) -> Trace:
    """The staged search on `pool` until it has spent `budget_units` full-pipeline equivalents;
    `options` go to StagedPlanner."""
    repeat = all(pool.draw(key, REPEAT_SEED) is not None for key in pool.rows)
    planner = StagedPlanner(
        pool.search, seed=seed, base=Base(pool.design.meta["base"]), repeat=repeat, **options
    )
    searcher = StagedSearcher(planner, pool.search.mode)
    return _JobLoop(searcher, pool, model, budget_units * pool.pipeline_unit(model), workers).run()


class _JobLoop:
    def __init__(self, searcher: StagedSearcher, pool: Pool, model: str, budget: float, workers: int) -> None:
        self.searcher, self.planner = searcher, searcher.planner
        self.pool, self.model, self.budget, self.workers = pool, model, budget, workers
        recorded = set.intersection(*(set(row.short) for row in pool.rows.values()))
        self.short = max(recorded) if recorded else None  # the longest short schedule every row has
        self.full = pool.full_epochs()
        self.events: list[tuple[float, int, str, Job, dict[str, float]]] = []
        self.order = itertools.count()
        self.clock = Clock()
        self.stored: set[str] = set()
        self.trace = Trace()

    def run(self) -> Trace:
        for _ in range(self.workers):
            self.launch(0.0)
        while self.events:
            now, _, tid, job, result = heapq.heappop(self.events)
            self.searcher.on_trial_complete(tid, result)
            if job.rung >= 3:
                self.trace.finished += 1
                self.record(now)
            self.launch(now)
        return self.trace

    def launch(self, now: float) -> None:
        if self.clock.spent(now) >= self.budget:
            return
        tid = f"j{next(self.order):05d}"
        config = self.searcher.suggest(tid)
        assert config is not None  # the planner always has a job: a promotion or a new configuration
        entry = config[JOB_KEY]
        params = {k: v for k, v in config.items() if k != JOB_KEY}
        job = Job(entry["config"], entry["rung"], params, entry["audit"])
        if job.rung == 2 and self.short is None:
            raise ValueError(f"{self.pool.folder}: the table has no short DeepLab schedule for rung 2")
        key = self.pool.snap(job.params)
        result = self.job_result(job, key)
        cost = _cost(result)
        self.trace.trials += job.rung == 0
        self.clock.run(now, cost)
        heapq.heappush(self.events, (now + cost, next(self.order), tid, job, result))

    def run_job(self, job: Job, key: Key) -> tuple[float, float]:
        """(compute the job pays, the value it reports)."""
        result = self.job_result(job, key)
        return _cost(result), result[METRIC]

    def job_result(self, job: Job, key: Key) -> dict[str, float]:
        """The result the job reports, as a real job does (tuner.trial.job): its value and each stage
        it computed as `<stage>_compute_seconds` (the cost model's units; the planner weighs them)."""
        row = self.pool.rows[key]
        if job.rng_offset:
            draw = self.pool.draw(key, REPEAT_SEED)
            assert draw is not None  # the planner repeats only on a table with repeats
            value, seconds = draw
        else:
            seconds = row.seconds
            short = row.short[self.short][0] if self.short is not None else 0.0
            value = (row.cam, row.pseudo, short, row.val)[job.rung]
        result = {METRIC: value}
        for stage, store_key in zip(
            STAGES,
            store_keys(job.params, {"rng_offset": job.rng_offset}, {"fidelity": job.fidelity}),
            strict=True,
        ):
            if store_key in self.stored:
                self.trace.stages_reused += 1
            else:
                self.stored.add(store_key)
                self.trace.stages_computed += 1
                result[f"{stage}_compute_seconds"] = self.stage_cost(stage, job, key, seconds)
            if stage == job.until:
                break
        return result

    def stage_cost(self, stage: str, job: Job, key: Key, seconds: dict[str, float]) -> float:
        share = self.short / self.full if job.fidelity == "short" and self.short else 1.0
        if self.model == "voc":
            return VOC_COSTS[stage] * (share if stage == "segment" else 1.0)
        if stage == "segment" and job.fidelity == "short":
            return self.pool.rows[key].short_seconds[self.short]  # type: ignore[index]
        return seconds[stage]

    def record(self, now: float) -> None:
        incumbent = self.planner.incumbent()
        if incumbent is None:
            return
        config = incumbent[0]
        key = self.pool.snap(self.planner.configs[config].params)
        self.trace.points.append((self.clock.spent(now), self.pool.rows[key].true))


def _cost(result: dict[str, float]) -> float:
    return sum(v for k, v in result.items() if k.endswith("_compute_seconds"))
