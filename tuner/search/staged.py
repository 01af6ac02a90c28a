"""Staged promotion search over the stage tree (issue 24; search-review.md section 3.2).

A configuration climbs a ladder of rungs in cost order:

    0 cam     the seed stage: CAM mIoU at the best threshold
    1 pseudo  the refine stage: pseudo-mask mIoU
    2 short   DeepLab at a short schedule (its poly decay compressed into the short run)
    3 full    DeepLab's full schedule
    4 repeat  the whole pipeline again at the next rng_seed; the config's value is the mean of its draws

Rungs 0-1 rank upstreams (method, seed and refine knobs). Promoted out of rung 0, a configuration
goes on to rung 1 with `refine_branch - 1` siblings: upstreams sharing its method and seed knobs (its
seed stage, read from the store) with refine knobs of their own, which start on rung 1. Promoted out of
rung 1, an upstream spawns `branch` children, each with DeepLab knobs of its own; children rank on
rungs 2-4. Both are the stage tree's branching (search-review.md 3.2 item 3): a promoted stage is
built on by several downstream configurations, each paying only its own stages.

Promotion-based asynchronous successive halving (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", 2020, Algorithm 2; the semantics of Optuna's SuccessiveHalvingPruner, not
Ray's stopping ASHA): a rung job records its value and ends. A free worker takes the best
configuration that sits in the top 1/eta of a rung holding at least `min_records` records and was not
promoted from it yet, the highest rung first; else it starts a new configuration at rung 0. Nothing is
stopped and nothing idles; a later promotion costs only what its configuration is missing.

Each rung's eta below the full schedule follows its measured fidelity (`eta_for`): the lower 90%
bootstrap bound of the rank correlation between a rung's values and the next rung's (`gate` "next")
or the configurations' full-schedule means (`gate` "final"), over the configurations holding both,
once `gate_pairs` of them do. On the synthetic replay table the two gates did alike (docs/benchmarks.md).
A share `audit` of new jobs promotes a configuration at random from those not promoted, so that the
fidelity is not only measured on the range the rung already cut.

Without `repeat` the ladder ends at the full schedule (a replay table recorded at one rng_seed).

Two models (per-stage Bayesian optimisation, search-review.md 3.2 item 4): a TPE study over the method,
seed and refine knobs, told an upstream's pseudo-mask mIoU; one over the DeepLab knobs, told a child's
short-schedule value. Neither sees a knob its trials did not run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from tuner.search.ladder import Ladder, eta_for, spearman_lower
from tuner.search.reuse import param_stage
from tuner.search.startup import STARTUP_TRIALS, start_up
from tuner.spaces.space import CHOICE, Base, SearchSpace
from tuner.trial.job import FULL_RUNG, RUNG_NAMES

RUNGS = RUNG_NAMES  # cam, pseudo, short, full, repeat: the names the trainable logs (tuner.trial.job)
UNTIL = ("seed", "refine", "segment", "segment", "segment")  # the last stage a rung's job runs
UPSTREAM_RUNGS = 2  # rungs 0-1 hold upstreams, 2-4 their children
SHORT, FULL = 2, FULL_RUNG
GATES = ("final", "next")
AUTO_BRANCH = 2  # refine configurations per promoted seed under refine_branch="auto", while siblings pay


@dataclass(frozen=True)
class Job:
    """One rung job: run configuration `config` up to rung `rung` (earlier stages from the store)."""

    config: int
    rung: int
    params: dict[str, Any]  # the Optuna parameters: `space`, `<space>|key` and shared keys
    audit: bool = False

    @property
    def until(self) -> str:
        return UNTIL[self.rung]

    @property
    def fidelity(self) -> str:
        """DeepLab's schedule for this job: `short` on rung 2, `full` above, `none` below."""
        return "short" if self.rung == 2 else ("full" if self.rung > 2 else "none")

    @property
    def rng_offset(self) -> int:
        """Added to the base rng_seed: the repeat rung draws the whole pipeline again."""
        return 1 if RUNGS[self.rung] == "repeat" else 0


@dataclass
class ConfigState:
    params: dict[str, Any]
    parent: int | None  # a child's upstream
    upstream_trial: int | None = None  # the number of its trial in the upstream study (an upstream's)
    segment_trial: int | None = None  # the number of its trial in the segment study (a child's)
    draws: list[float] = field(default_factory=list)  # full-schedule values, one per rng_seed


class StagedPlanner:
    """Issues rung jobs and takes their values; the incumbent is the best configuration of the highest
    full-schedule rung that holds any (a mean over two draws once any finalist was repeated)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        seed: int,
        base: Base | None = None,
        etas: Sequence[float] = (2.0, 3.0, 3.0, 3.0),
        min_records: int | None = None,
        branch: int = 1,
        refine_branch: int | str = "auto",
        audit: float = 0.1,
        gate_pairs: int = 8,
        gate: str = "next",
        short: bool = True,
        repeat: bool = True,
    ) -> None:
        # What builds this planner again (a pickled searcher, tuner.search.planner_state): not its state.
        self.init_args: dict[str, Any] = {
            "space": space,
            "seed": seed,
            "base": base,
            "etas": tuple(etas),
            "min_records": min_records,
            "branch": branch,
            "refine_branch": refine_branch,
            "audit": audit,
            "gate_pairs": gate_pairs,
            "gate": gate,
            "short": short,
            "repeat": repeat,
        }
        if len(etas) != len(RUNGS) - 1 or any(e < 1 for e in etas):
            raise ValueError(f"etas: one reduction factor >= 1 per promotion ({len(RUNGS) - 1}), got {etas}")
        self.space, self.sign = space, 1.0 if space.mode == "max" else -1.0
        self.ladder = Ladder(tuple(etas), min_records or max(4, math.ceil(max(etas))))
        if branch < 1:
            raise ValueError(f"branch: at least 1, got {branch}")
        if refine_branch != "auto" and (not isinstance(refine_branch, int) or refine_branch < 1):
            raise ValueError(f"refine_branch: 'auto' or an integer >= 1, got {refine_branch!r}")
        self.branch, self.refine_branch = branch, refine_branch
        self.audit, self.gate_pairs = audit, gate_pairs
        self.top = len(RUNGS) - (1 if repeat else 2)  # the highest rung (without repeats: full)
        if gate not in GATES:
            raise ValueError(f"gate: {gate!r} is not one of {GATES}")
        self.gate = gate
        self.first_child_rung = SHORT if short else FULL  # without the short rung, children start full
        self.seed, self.rng = seed, np.random.default_rng(seed)
        self.configs: list[ConfigState] = []
        self.running: set[tuple[int, int]] = set()
        self.waiting: list[int] = []  # children not started yet
        self.sibling_of: list[int] = []  # seed configurations owed a sibling, in promotion order
        self.prices: dict[str, list[float]] = {"seed": [], "refine": []}  # computed stage seconds
        self._etas: dict[int, tuple[int, float]] = {}  # rung -> (pairs it was measured on, eta)
        self.upstream = self.new_study(seed)
        self.segment = self.new_study(seed + 1)
        base = base or Base()
        first = start_up(space, base)  # the base config first, then each other method once
        for params in first:
            self.upstream.enqueue_trial(
                {k: v for k, v in params.items() if param_stage(k, CHOICE) != "segment"}
            )
        self.segment.enqueue_trial({k: v for k, v in first[0].items() if param_stage(k, CHOICE) == "segment"})

    @staticmethod
    def new_study(seed: int) -> optuna.Study:
        sampler = optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=STARTUP_TRIALS
        )
        return optuna.create_study(direction="maximize", sampler=sampler)

    def eta(self, rung: int) -> float:
        """The reduction factor out of `rung`: the configured one until `gate_pairs` configurations hold
        a value on both this rung and the next, then gated by the fidelity measured between them."""
        if rung >= FULL:  # the repeat lowers a finalist's noise; it is no proxy to gate
            return self.ladder.etas[rung]
        pairs = self.pairs(rung)
        if len(pairs) < self.gate_pairs:
            return self.ladder.etas[rung]
        if self._etas.get(rung, (-1, 0.0))[0] != len(pairs):  # measured again when a pair is added
            x, y = zip(*pairs, strict=True)
            self._etas[rung] = (len(pairs), eta_for(spearman_lower(x, y, self.rng), self.ladder.etas[rung]))
        return self._etas[rung][1]

    def pairs(self, rung: int) -> list[tuple[float, float]]:
        """(value on `rung`, what it is judged against) per configuration holding both: with `gate`
        "final", the mean of its full-schedule draws (what promotion is for); with "next", its value on
        the next rung. An upstream is paired with the mean over its children."""
        low = self.ladder.records[rung]
        if self.gate == "next":
            high = self.ladder.records[rung + 1]
        else:
            high = {c: float(np.mean(cfg.draws)) for c, cfg in enumerate(self.configs) if cfg.draws}
        if rung >= UPSTREAM_RUNGS or (self.gate == "next" and rung + 1 < UPSTREAM_RUNGS):
            return [(low[c], high[c]) for c in low if c in high]
        children: dict[int, list[float]] = {}
        for c, value in high.items():
            parent = self.configs[c].parent
            if parent is not None:
                children.setdefault(parent, []).append(value)
        return [(low[p], float(np.mean(v))) for p, v in children.items() if p in low]

    def next_job(self) -> Job:
        for rung in reversed(range(self.top)):
            if rung == UPSTREAM_RUNGS - 1 and self.waiting:  # children spawned by an earlier promotion
                return self._start(self.waiting.pop(0), self.first_child_rung, audit=False)
            if rung == 0 and self.sibling_of and self._siblings_pay() and not self._start_up_left():
                return self._start(self._sibling(self.sibling_of.pop(0)), 1, audit=False)
            due = [
                c for c in self.ladder.promotable(rung, self.eta(rung)) if (c, rung + 1) not in self.running
            ]
            if due:
                return self._promote(due[0], rung, audit=False)
        if self.rng.random() < self.audit and (job := self._audit()) is not None:
            return job
        return self._new_upstream()

    def _audit(self) -> Job | None:
        """A random unpromoted configuration of the lowest rung that has one (with enough records)."""
        for rung in range(self.top):
            held = self.ladder.records[rung]
            left = sorted(c for c in held if c not in self.ladder.promoted[rung])
            if len(held) >= self.ladder.min_records and left:
                return self._promote(int(self.rng.choice(left)), rung, audit=True)
        return None

    def _promote(self, config: int, rung: int, audit: bool) -> Job:
        self.ladder.promoted[rung].add(config)
        if rung == 0 and not audit:  # an audit measures the rung's fidelity; its seed earned no siblings
            per_seed = AUTO_BRANCH if isinstance(self.refine_branch, str) else self.refine_branch
            self.sibling_of += [config] * (per_seed - 1)
        if rung + 1 == UPSTREAM_RUNGS:
            children = [self._child(config) for _ in range(self.branch)]
            self.waiting += children[1:]  # the others start on the next free workers
            return self._start(children[0], self.first_child_rung, audit)
        return self._start(config, rung + 1, audit)

    def _child(self, parent: int) -> int:
        trial = self.segment.ask()
        self.space.define(trial, stages=("segment",), space=self.configs[parent].params.get(CHOICE))
        params = {**self.configs[parent].params, **trial.params}
        self.configs.append(ConfigState(params, parent, segment_trial=trial.number))
        return len(self.configs) - 1

    def observe(self, computed: dict[str, float]) -> None:
        """A finished job's computed stage seconds (`{stage: seconds}`, stages read from the store left
        out): the prices `refine_branch="auto"` weighs."""
        for stage, seconds in computed.items():
            if stage in self.prices:
                self.prices[stage].append(float(seconds))

    def _siblings_pay(self) -> bool:
        """Whether owed siblings start now. With `refine_branch="auto"`, while the seed stage's mean
        computed price is at least the refine stage's: a sibling, which pays only refine, then costs at
        most half of a new upstream. On the replay (docs/benchmarks.md, "Thirty seeds, and refine
        siblings") siblings paid under the measured synthetic costs (seed 2.3x refine) and cost under
        VOC's (seed 2/3 of refine)."""
        if self.refine_branch != "auto":
            return True
        seed, refine = self.prices["seed"], self.prices["refine"]
        return bool(seed and refine) and float(np.mean(seed)) >= float(np.mean(refine))

    def _start_up_left(self) -> bool:
        """Whether start-up configurations wait in the upstream study (asked before any sibling: the
        study hands its waiting trials out first, whatever a sampler would fix)."""
        return bool(self.upstream.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))

    def _sibling(self, config: int) -> int:
        """A new upstream with `config`'s method and seed knobs (its seed stage) and refine knobs the
        upstream study samples given them (Optuna's PartialFixedSampler around the study's sampler)."""
        params = self.configs[config].params
        seed_knobs = {k: v for k, v in params.items() if param_stage(k, CHOICE) == "seed"}
        sampler = self.upstream.sampler
        self.upstream.sampler = optuna.samplers.PartialFixedSampler(seed_knobs, sampler)
        try:
            trial = self.upstream.ask()
            choice = self.space.define(trial, stages=("seed", "refine"))
        finally:
            self.upstream.sampler = sampler
        self.configs.append(ConfigState({**choice, **trial.params}, None, upstream_trial=trial.number))
        return len(self.configs) - 1

    def _new_upstream(self) -> Job:
        trial = self.upstream.ask()
        choice = self.space.define(trial, stages=("seed", "refine"))
        self.configs.append(ConfigState({**choice, **trial.params}, None, upstream_trial=trial.number))
        return self._start(len(self.configs) - 1, 0, audit=False)

    def _start(self, config: int, rung: int, audit: bool) -> Job:
        self.running.add((config, rung))
        return Job(config, rung, dict(self.configs[config].params), audit)

    def report(self, job: Job, value: float) -> None:
        """The value a rung job measured, in the search's metric direction (sign applied here)."""
        self.running.discard((job.config, job.rung))
        config, score = self.configs[job.config], self.sign * value
        if job.rung >= FULL:
            config.draws.append(score)
            score = float(np.mean(config.draws))
        self.ladder.records[job.rung][job.config] = score
        if job.rung == 1 and config.upstream_trial is not None:
            self.upstream.tell(config.upstream_trial, score)
        if job.rung == self.first_child_rung and config.segment_trial is not None:
            self.segment.tell(config.segment_trial, score)

    def fail(self, job: Job) -> None:
        """A job that ended without a value: its configuration keeps what it has and climbs no further
        from the rung below (it is not promoted again, so a config that cannot run is not retried)."""
        self.running.discard((job.config, job.rung))

    def incumbent(self) -> tuple[int, float] | None:
        """(configuration, its value in the metric's direction) at the highest full-schedule rung."""
        for rung in (4, 3):
            held = self.ladder.records[rung]
            if held:
                best = max(held, key=lambda c: held[c])
                return best, self.sign * held[best]
        return None
