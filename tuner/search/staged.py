"""Staged promotion search over the stage tree (issue 24; search-review.md section 3.2).

A configuration climbs a ladder of rungs in cost order:

    0 cam     the seed stage: CAM mIoU at the best threshold
    1 pseudo  the refine stage: pseudo-mask mIoU
    2 short   DeepLab at a short schedule (its poly decay compressed into the short run)
    3 full    DeepLab's full schedule
    4 repeat  the whole pipeline again at the next rng_seed; the config's value is the mean of its draws

Rungs 0-1 rank upstreams (method, seed and refine knobs). Promoted out of rung 1, an upstream spawns
`branch` children, each with DeepLab knobs of its own; children rank on rungs 2-4.

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
from scipy.stats import rankdata

from tuner.search.reuse import param_stage
from tuner.search.startup import STARTUP_TRIALS, start_up
from tuner.spaces.space import CHOICE, Base, SearchSpace
from tuner.trial.job import FULL_RUNG, RUNG_NAMES

RUNGS = RUNG_NAMES  # cam, pseudo, short, full, repeat: the names the trainable logs (tuner.trial.job)
UNTIL = ("seed", "refine", "segment", "segment", "segment")  # the last stage a rung's job runs
UPSTREAM_RUNGS = 2  # rungs 0-1 hold upstreams, 2-4 their children
SHORT, FULL = 2, FULL_RUNG
GATES = ("final", "next")


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


def eta_for(lower_bound: float, eta: float) -> float:
    """A rung's reduction factor from the lower bound of its fidelity (search-review.md 3.2 item 5):
    below 0.3 it promotes everything (the rung is off), below 0.7 half, above that `eta`."""
    if lower_bound < 0.3:
        return 1.0
    return min(2.0, eta) if lower_bound < 0.7 else eta


def spearman_lower(
    x: Sequence[float], y: Sequence[float], rng: np.random.Generator, boot: int = 500
) -> float:
    """The 5% bootstrap quantile of Spearman's rank correlation of paired values (all resamples at
    once: ranks with ties averaged, then Pearson's correlation of the ranks, row by row)."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    index = rng.integers(0, len(xs), (boot, len(xs)))
    rx, ry = rankdata(xs[index], axis=1), rankdata(ys[index], axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    norm = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    valid = norm > 0  # a resample of one repeated pair has no ranking
    if not valid.any():
        return -1.0
    return float(np.quantile((rx * ry).sum(axis=1)[valid] / norm[valid], 0.05))


@dataclass
class Ladder:
    """The rungs' records (config -> value, larger is better) and the promotions made from each."""

    etas: tuple[float, ...]  # per promotion out of rungs 0..len(RUNGS)-2
    min_records: int
    records: list[dict[int, float]] = field(default_factory=lambda: [{} for _ in RUNGS])
    promoted: list[set[int]] = field(default_factory=lambda: [set() for _ in RUNGS])

    def promotable(self, rung: int, eta: float) -> list[int]:
        """The configurations of `rung` due a promotion, best first: in the top floor(n / eta) of a rung
        holding at least `min_records` records, and not promoted from it yet."""
        held = self.records[rung]
        if len(held) < self.min_records:
            return []
        top = sorted(held, key=lambda c: -held[c])[: int(len(held) // eta)]
        return [c for c in top if c not in self.promoted[rung]]


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
        self.branch, self.audit, self.gate_pairs = branch, audit, gate_pairs
        self.top = len(RUNGS) - (1 if repeat else 2)  # the highest rung (without repeats: full)
        if gate not in GATES:
            raise ValueError(f"gate: {gate!r} is not one of {GATES}")
        self.gate = gate
        self.first_child_rung = SHORT if short else FULL  # without the short rung, children start full
        self.seed, self.rng = seed, np.random.default_rng(seed)
        self.configs: list[ConfigState] = []
        self.running: set[tuple[int, int]] = set()
        self.waiting: list[int] = []  # children not started yet
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
