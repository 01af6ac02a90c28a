"""The staged search behind Ray Tune's Searcher interface: each Tune trial is one rung job.

`suggest` asks the planner (tuner.search.staged) for the next job and hands Tune its parameters with
the job under JOB_KEY (configuration, rung, the stage to run until, DeepLab's schedule, the rng_seed
offset); the trainable runs the pipeline up to that stage, earlier stages from the store, and reports
the rung's value as `objective`. `on_trial_complete` gives the value to the planner. Tune runs these
trials with a FIFO scheduler: the planner decides promotions, nothing is stopped mid-job.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.search import Searcher

from tuner.search.staged import Job, StagedPlanner

log = logging.getLogger(__name__)

JOB_KEY = "wsss_job"  # in a trial's Tune config: the rung job it runs
METRIC = "objective"


def job_entry(job: Job) -> dict[str, Any]:
    """A job's entry in a Tune config beside its parameters: plain values (Tune prints and stores it)."""
    return {
        "config": job.config,
        "rung": job.rung,
        "audit": job.audit,
        "until": job.until,
        "fidelity": job.fidelity,
        "rng_offset": job.rng_offset,
    }


class StagedSearcher(Searcher):
    def __init__(self, planner: StagedPlanner, mode: str = "max") -> None:
        super().__init__(metric=METRIC, mode=mode)
        self.planner = planner
        self.jobs: dict[str, Job] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        job = self.planner.next_job()
        self.jobs[trial_id] = job
        return {**job.params, JOB_KEY: job_entry(job)}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        job = self.jobs.pop(trial_id, None)
        if job is None:
            return
        value = None if error or result is None else result.get(METRIC)
        if value is None:
            log.warning("rung job %s (config %d, rung %d) failed: not ranked", trial_id, job.config, job.rung)
            self.planner.fail(job)
            return
        self.planner.report(job, float(value))
