"""The staged search behind Ray Tune's Searcher interface: each Tune trial is one rung job.

`suggest` asks the planner (tuner.search.staged) for the next job and hands Tune its parameters with
the job under JOB_KEY (configuration, rung, the stage to run until, DeepLab's schedule, the rng_seed
offset, the configuration's earlier full-schedule draws); the trainable (tuner.trial.job) runs the
pipeline up to that stage, earlier stages from the store, and reports the rung's value as `objective`.
`on_trial_complete` gives the value to the planner. Tune runs these trials with a FIFO scheduler: the
planner decides promotions, nothing is stopped mid-job. With a budget (tuner.search.budget) `suggest`
answers FINISHED once the jobs' computed stages have spent it; jobs in flight finish.

The state (planner, budget, jobs in flight) is saved as JSON in Tune's searcher checkpoints and in
the pickled experiment (tuner.search.planner_state), so `wsss-tune resume` continues the ladder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

import wsss
from tuner.search import planner_state
from tuner.search.budget import ComputeBudget
from tuner.search.staged import FULL, RUNGS, Job, StagedPlanner
from tuner.tracking.runs import JOB_KEY

log = logging.getLogger(__name__)

METRIC = "objective"
__all__ = ["JOB_KEY", "METRIC", "StagedSearcher", "job_entry"]


def job_entry(job: Job, draws: list[float], spent: float = 0.0, parent: int | None = None) -> dict[str, Any]:
    """A job's entry in a Tune config beside its parameters: plain values (Tune prints and stores it)."""
    return {
        "config": job.config,
        "rung": job.rung,
        "audit": job.audit,
        "until": job.until,
        "fidelity": job.fidelity,
        "rng_offset": job.rng_offset,
        "draws": draws,  # the configuration's earlier full-schedule values, in the metric's direction
        "spent": spent,  # compute seconds the configuration's earlier jobs computed
        "parent": parent,  # a child's upstream configuration (the stage tree), None for an upstream
    }


class StagedSearcher(Searcher):
    def __init__(
        self, planner: StagedPlanner, mode: str = "max", budget: ComputeBudget | None = None
    ) -> None:
        super().__init__(metric=METRIC, mode=mode)
        self.planner, self.budget = planner, budget
        self.jobs: dict[str, Job] = {}
        self.spent: dict[int, float] = {}  # configuration -> compute seconds of its jobs' own stages
        self.finished_jobs = 0

    def suggest(self, trial_id: str) -> dict | None:
        if self.budget is not None and self.budget.exhausted():
            log.info("staged search: budget spent (%s); the jobs in flight finish", self.budget.describe())
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel (a str), untyped there
        job = self.planner.next_job()
        self.jobs[trial_id] = job
        draws = (
            [self.planner.sign * d for d in self.planner.configs[job.config].draws] if job.rung > FULL else []
        )
        parent = self.planner.configs[job.config].parent
        return {**job.params, JOB_KEY: job_entry(job, draws, self.spent.get(job.config, 0.0), parent)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        job = self.jobs.pop(trial_id, None)
        if job is None:
            return
        if result is not None:
            computed = {k: float(v) for k, v in result.items() if k.endswith("_compute_seconds")}
            self.spent[job.config] = self.spent.get(job.config, 0.0) + sum(computed.values())
            self.planner.observe({k.removesuffix("_compute_seconds"): v for k, v in computed.items()})
            if self.budget is not None:
                self.budget.record(result, job.fidelity)
        value = None if error or result is None else result.get(METRIC)
        if value is None:
            log.warning("rung job %s (config %d, rung %d) failed: not ranked", trial_id, job.config, job.rung)
            self.planner.fail(job)
            return
        self.planner.report(job, float(value))
        self.finished_jobs += 1
        log.info("staged search: %s", self.progress())

    def progress(self) -> str:
        """One line: records and promotions per rung, configurations, the incumbent, the budget."""
        ladder = self.planner.ladder
        rungs = " · ".join(
            f"{name} {len(ladder.records[r])}"
            + (f" ({len(ladder.promoted[r])} up)" if ladder.promoted[r] else "")
            for r, name in enumerate(RUNGS)
        )
        best = self.planner.incumbent()
        line = f"{len(self.planner.configs)} configs, {self.finished_jobs} jobs; {rungs}"
        line += f"; best config {best[0]} at {best[1]:.2f}" if best else ""
        return line + (f"; budget {self.budget.describe()}" if self.budget else "")

    # Saved state: JSON only (the storage is read as untrusted data).
    def state(self) -> dict[str, Any]:
        return {
            "planner_args": {k: v for k, v in self.planner.init_args.items() if k not in ("space", "base")},
            "planner": planner_state.dump(self.planner),
            "jobs": {t: [j.config, j.rung, j.params, j.audit] for t, j in self.jobs.items()},
            "finished_jobs": self.finished_jobs,
            "spent": {str(c): s for c, s in self.spent.items()},
            "budget": self.budget.state() if self.budget else None,
        }

    def load(self, state: dict[str, Any], source: str) -> None:
        try:
            planner_state.load(self.planner, state["planner"], source)
            self.jobs = {
                t: Job(int(c), int(r), dict(p), bool(a)) for t, (c, r, p, a) in state["jobs"].items()
            }
            self.finished_jobs = int(state["finished_jobs"])
            self.spent = {int(c): float(s) for c, s in state["spent"].items()}
            if self.budget is not None and state["budget"] is not None:
                self.budget.load(state["budget"])
        except (KeyError, TypeError, ValueError) as exc:
            raise wsss.ConfigError(f"{source}: not a staged searcher's state ({exc})") from None

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps(self.state()))

    def restore(self, checkpoint_path: str) -> None:
        try:
            state = json.loads(Path(checkpoint_path).read_text())
        except (OSError, ValueError) as exc:
            raise wsss.ConfigError(
                f"{checkpoint_path}: the staged searcher's state is unreadable ({exc})"
            ) from None
        self.load(state, checkpoint_path)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher into its experiment state: the planner travels as its JSON state
        # plus the parsed space and base config it is rebuilt from (its Optuna studies are not pickled).
        return {
            "mode": self.mode,
            "space": self.planner.init_args["space"],
            "base": self.planner.init_args["base"],
            "budget_args": (self.budget.amount, self.budget.unit, self.budget.short_fraction)
            if self.budget
            else None,
            "state": self.state(),
        }

    def __setstate__(self, pickled: dict[str, Any]) -> None:
        state = pickled["state"]
        args = state["planner_args"] | {"space": pickled["space"], "base": pickled["base"]}
        budget = ComputeBudget(*pickled["budget_args"]) if pickled["budget_args"] else None
        self.__init__(StagedPlanner(**args), pickled["mode"], budget)  # type: ignore[misc]
        self.load(state, "the pickled staged searcher")
