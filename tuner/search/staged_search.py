"""The staged searcher as `wsss-tune search --searcher staged` runs it (tuner.search.driver): built from
the search's options, its budget, and its ladder logged to the search's parent run at the end."""

from __future__ import annotations

import logging
import time
from typing import Any

from mlflow.tracking import MlflowClient

import wsss
from tuner.search.budget import ComputeBudget
from tuner.search.job_searcher import StagedSearcher
from tuner.search.options import SearchOptions
from tuner.search.staged import RUNGS, StagedPlanner
from tuner.spaces.space import Base, SearchSpace
from tuner.tracking.runs import log_metrics
from tuner.tracking.write_queue import retry

log = logging.getLogger(__name__)

STAGED_ETAS = (2.0, 3.0, 3.0, 3.0)  # CAM promotes half, the later rungs a third (docs/benchmarks.md)


def staged_searcher(space: SearchSpace, options: SearchOptions, base: Base) -> StagedSearcher:
    """The staged searcher (`--searcher staged`): the planner with its defaults, the budget if any."""
    if wsss.METRIC_STAGE[space.metric] != "segment":
        raise wsss.ConfigError(
            f"--searcher staged: the spaces search on {space.metric}, a {wsss.METRIC_STAGE[space.metric]} "
            "metric; the staged searcher climbs to DeepLab (metric: val_miou), use --searcher asha"
        )
    budget = ComputeBudget.parse(options.budget, options.short_fraction) if options.budget else None
    # --reduction-factor, when given, is the eta of every rung above CAM; --rung-records the records
    # a rung holds before it promotes.
    rf = options.reduction_factor
    etas = STAGED_ETAS if rf is None else (STAGED_ETAS[0], *(float(rf),) * (len(STAGED_ETAS) - 1))
    refine_branch = "auto" if options.refine_branch == "auto" else int(options.refine_branch)
    planner = StagedPlanner(
        space,
        seed=options.seed,
        base=base,
        etas=etas,
        min_records=options.rung_records,
        refine_branch=refine_branch,
    )
    return StagedSearcher(planner, space.mode, budget)


def log_ladder(client: MlflowClient, searcher: StagedSearcher, run_id: str) -> None:
    """The staged search's ladder at its end, as metrics of the search's parent run."""
    ladder = searcher.planner.ladder
    metrics = {f"rung_{name}_records": float(len(ladder.records[r])) for r, name in enumerate(RUNGS)}
    metrics |= {"configs": float(len(searcher.planner.configs)), "jobs": float(searcher.finished_jobs)}
    if searcher.budget is not None and searcher.budget.used() is not None:
        metrics["budget_used"] = float(searcher.budget.used() or 0.0)
    metrics["compute_seconds"] = float(sum(searcher.spent.values()))
    retry(lambda c: log_metrics(c, run_id, metrics, 0, int(time.time() * 1000)), client, "log the ladder", 60)
    log.info("staged search: %s", searcher.progress())


def budget_spent(searcher: Any) -> bool:
    """Whether the search stopped because a staged searcher spent its budget (not interrupted)."""
    return (
        isinstance(searcher, StagedSearcher) and searcher.budget is not None and searcher.budget.exhausted()
    )
