"""Search arms replayed on a pool with the production decision code on a simulated clock.

Each arm is the real searcher and scheduler a real search would build (Ray's OptunaSearch and
ASHAScheduler for the reference arms; tuner.search.strategy's make_searcher and StageASHA for the
shipped one); only Tune's controller is replaced by an event loop over K workers that calls them in
the order TuneController does (tune_controller.py `_process_trial_result` and `stop_trial`): after a
stage report the scheduler decides; on CONTINUE the searcher sees the result, on STOP (or after the
last stage) the scheduler and then the searcher are told the trial completed with that result.

A trial's proposal snaps to the pool's nearest pipeline (tuner.replay.pool), whose recorded values it
reports stage by stage: best-threshold CAM mIoU, pseudo-mask mIoU, then search-half val mIoU. An
arm with a stage store pays nothing for a stage whose exact upstream knobs some trial computed
before (keys are the proposal's knobs, not the snapped pipeline's: snapping must not invent reuse).
Compute is worker-busy time; the incumbent is the arm's best finished trial by what it reported.
"""

from __future__ import annotations

import heapq
import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from tuner.replay.jobs import replay_staged
from tuner.replay.loop import Clock, store_keys
from tuner.replay.pool import STAGES, Key, Pool
from tuner.replay.trace import Trace
from tuner.search.options import SearchOptions
from tuner.search.strategy import make_searcher, scheduler
from tuner.spaces.ranges import Base
from tuner.trial.trainable import REUSE_KEY, STAGE_CACHED

METRIC = "objective"
# The shipped defaults: reuse fraction and warm-up, reduction factor, rung records.
SHIPPED = SearchOptions(space_files=(), samples=1, experiment="replay")


@dataclass
class Parts:
    searcher: Any
    scheduler: Any  # a TrialScheduler, called here without a TuneController (none of them uses it)
    store: bool  # stages are shared through a content-addressed store


def _plain(pool: Pool, seed: int, sampler: optuna.samplers.BaseSampler, asha: bool) -> Parts:
    searcher = OptunaSearch(space=pool.search.define, metric=METRIC, mode=pool.search.mode, sampler=sampler)
    sched: TrialScheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=len(STAGES), grace_period=1, reduction_factor=2)
        if asha
        else FIFOScheduler()
    )
    return Parts(searcher, sched, store=False)


def _shipped(pool: Pool, seed: int, workdir: Path) -> Parts:
    searcher = make_searcher(
        pool.search,
        experiment=f"replay-{seed}",
        storage=str(workdir),
        seed=seed,
        reuse_fraction=SHIPPED.reuse_fraction,
        reuse_warmup=SHIPPED.reuse_warmup,
        warm_start_from=None,
        base=Base(pool.design.meta["base"]),
    )
    return Parts(
        searcher, scheduler(pool.search, SHIPPED.asha_reduction_factor, SHIPPED.rung_records), store=True
    )


# name -> (label, builder(pool, seed, workdir)). The next searcher design gets its own entry here.
ARMS: dict[str, tuple[str, Callable[[Pool, int, Path], Parts]]] = {
    "a": (
        "Ray Tune + OptunaSearch (TPE), FIFO",
        lambda p, s, w: _plain(p, s, optuna.samplers.TPESampler(seed=s, multivariate=True), asha=False),
    ),
    "a2": (
        "Ray Tune + OptunaSearch + stock ASHA on stage reports",
        lambda p, s, w: _plain(p, s, optuna.samplers.TPESampler(seed=s, multivariate=True), asha=True),
    ),
    "a3": ("random search", lambda p, s, w: _plain(p, s, optuna.samplers.RandomSampler(seed=s), asha=False)),
    "b": ("wsss-tune search as shipped", _shipped),
}


@dataclass
class _Trial:
    tid: str
    key: Key
    store_keys: tuple[str, str, str]
    stage: int = 0


# Arms that issue rung jobs instead of trials (name -> label): they run on tuner.replay.jobs's loop.
JOB_ARMS = {"staged": "staged promotion search over the stage tree"}


def label(arm: str) -> str:
    return ARMS[arm][0] if arm in ARMS else JOB_ARMS[arm]


def replay(
    arm: str,
    pool: Pool,
    model: str,
    budget_units: float,
    seed: int,
    workers: int = 4,
    options: dict[str, Any] | None = None,
) -> Trace:
    """Run arm `arm` on `pool` until it has spent `budget_units` full-pipeline equivalents; `options`
    go to a job arm's planner (tuner.search.staged.StagedPlanner)."""
    if arm in JOB_ARMS:
        return replay_staged(pool, model, budget_units, seed, workers, **(options or {}))
    with tempfile.TemporaryDirectory(prefix="replay-") as workdir:
        parts = ARMS[arm][1](pool, seed, Path(workdir))
        parts.scheduler.set_search_properties(METRIC, pool.search.mode)
        return _Loop(parts, pool, model, budget_units * pool.pipeline_unit(model), workers).run()


class _Loop:
    def __init__(self, parts: Parts, pool: Pool, model: str, budget: float, workers: int) -> None:
        self.parts, self.pool, self.model, self.budget, self.workers = parts, pool, model, budget, workers
        self.events: list[tuple[float, int, _Trial]] = []
        self.order = itertools.count()  # ties in time resolve in the order stages started
        self.clock = Clock()
        self.stored: set[str] = set()
        self.trace = Trace()
        self.best: tuple[float, float] | None = None  # (reported value, true quality) of the incumbent
        self.sign = 1.0 if pool.search.mode == "max" else -1.0

    def run(self) -> Trace:
        for _ in range(self.workers):
            self.launch(0.0)
        while self.events:
            now, _, trial = heapq.heappop(self.events)
            if self.finish_stage(now, trial):
                self.launch(now)
        return self.trace

    def launch(self, now: float) -> None:
        if self.clock.spent(now) >= self.budget:
            return
        tid = f"t{self.trace.trials:05d}"
        config = self.parts.searcher.suggest(tid)
        if config is None:
            return
        params = {k: v for k, v in config.items() if k != REUSE_KEY}
        trial = _Trial(tid, self.pool.snap(params), store_keys(params))
        self.trace.trials += 1
        self.parts.scheduler.on_trial_add(None, SimpleNamespace(trial_id=tid))
        self.start_stage(now, trial)

    def start_stage(self, now: float, trial: _Trial) -> None:
        stage = STAGES[trial.stage]
        cost = 0.0
        if not (self.parts.store and trial.store_keys[trial.stage] in self.stored):
            cost = self.pool.stage_cost(trial.key, stage, self.model)
            self.clock.run(now, cost)
        heapq.heappush(self.events, (now + cost, next(self.order), trial))

    def finish_stage(self, now: float, trial: _Trial) -> bool:
        """Report the stage just run; True when the trial is over (its worker is free)."""
        key = trial.store_keys[trial.stage]
        cached = self.parts.store and key in self.stored
        if self.parts.store:
            self.stored.add(key)
        if cached:
            self.trace.stages_reused += 1
        else:
            self.trace.stages_computed += 1
        row = self.pool.rows[trial.key]
        value = (row.cam, row.pseudo, row.val)[trial.stage]
        trial.stage += 1
        result = {
            METRIC: value,
            "training_iteration": trial.stage,
            STAGE_CACHED: cached,
            "trial_id": trial.tid,
        }
        handle = SimpleNamespace(trial_id=trial.tid)
        decision = self.parts.scheduler.on_trial_result(None, handle, result)
        last = trial.stage == len(STAGES)
        if decision != TrialScheduler.STOP:
            self.parts.searcher.on_trial_result(trial.tid, result)
        if decision == TrialScheduler.STOP or last:
            self.parts.scheduler.on_trial_complete(None, handle, result)
            self.parts.searcher.on_trial_complete(trial.tid, result=result)
            if last:
                self.finished(now, row.val, row.true)
            return True
        self.start_stage(now, trial)
        return False

    def finished(self, now: float, reported: float, true: float) -> None:
        self.trace.finished += 1
        if self.best is None or self.sign * reported > self.sign * self.best[0]:
            self.best = (reported, true)
        self.trace.points.append((self.clock.spent(now), self.best[1]))
