"""One rung job of a staged search (tuner.search.job_searcher): the pipeline of one configuration up
to the job's stage, earlier stages from the store, at the job's DeepLab schedule and rng_seed.

The job's value goes to Tune as `objective`, once, at the end: CAM mIoU at the best threshold on the
cam rung, pseudo-mask mIoU on the pseudo rung, the search metric on the DeepLab rungs (at the short
schedule on the short rung). Every job of a configuration writes to the configuration's one MLflow
run (`config-<n>`), at step = its rung: the short schedule's segment metrics as `short_<metric>`; on
the full rung the metric itself (rng_seed as configured: what an exported config reruns); on the
repeat rung the metric becomes the mean over the configuration's draws and the draw is kept as
`<metric>_draw<k>`. The run ends FINISHED once it holds a full-schedule value, else KILLED with the
rung it stopped at; a later promotion reopens it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

import wsss
from tuner.tracking.runs import JOB_KEY, JOBS, run_key
from tuner.trial.run import flush_and_trim, trial_run
from tuner.trial.settings import TrialSettings
from tuner.trial.trainable import (
    STAGE_PROXY,
    describe_run,
    open_pipeline,
    paid_by,
    trial_builder,
    trial_config,
)

log = logging.getLogger(__name__)

RUNG_NAMES = ("cam", "pseudo", "short", "full", "repeat")  # the staged planner's rungs (tuner.search.staged)
FULL_RUNG = 3


def short_epochs(epochs: int, fraction: float) -> int:
    """The short rung's DeepLab epochs: `fraction` of the schedule, rounded, at least one. The poly
    decay runs over these epochs, so the short run is the schedule compressed, not cut."""
    return max(1, round(epochs * fraction))


def job_overrides(cfg: Any, job: dict[str, Any], settings: TrialSettings) -> dict[str, Any]:
    """Dotted settings that turn a configuration into its job's: schedule and rng_seed."""
    extra: dict[str, Any] = {}
    if job["fidelity"] == "short":
        extra["segment.train.epochs"] = short_epochs(cfg.segment.train.epochs, settings.short_fraction)
    if job["rng_offset"]:
        extra["rng_seed"] = cfg.rng_seed + int(job["rng_offset"])
    return extra


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def own_computation(outcomes: list[Any], builder: str) -> list[Any]:
    """The stages this job paid for (tuner.trial.trainable.paid_by): those it computed now, and those
    its own earlier attempt computed, which a job Tune runs again finds in the store."""
    return [o for o in outcomes if paid_by(o, builder)]


def job_metrics(
    outcomes: list[Any], job: dict[str, Any], metric: str, builder: str = ""
) -> tuple[dict[str, float], float]:
    """(what the configuration's run logs at the job's step, the job's value for the planner)."""
    logged: dict[str, float] = {}
    for outcome in outcomes:
        scalars = _scalars(outcome.metrics)
        if outcome.stage == "segment" and job["fidelity"] == "short":
            scalars = {f"short_{k}": v for k, v in scalars.items()}
        logged |= scalars
    rung = int(job["rung"])
    value = logged[{0: STAGE_PROXY["seed"], 1: STAGE_PROXY["refine"], 2: f"short_{metric}"}.get(rung, metric)]
    if rung > FULL_RUNG:  # a repeat: the configuration's value is the mean of its draws
        draws = [float(d) for d in job["draws"]] + [value]
        logged = {f"{k}_draw{len(draws) - 1}": v for k, v in logged.items() if not k.endswith("_seconds")}
        logged[metric] = sum(draws) / len(draws)
    computed = own_computation(outcomes, builder)
    logged["job_compute_seconds"] = sum(o.compute_seconds for o in computed)
    logged["compute_seconds"] = float(job["spent"]) + logged["job_compute_seconds"]  # the configuration's
    logged["rung"] = float(rung)
    return logged, value


def run_job(config: dict[str, Any], settings: TrialSettings) -> None:
    """The Tune trainable of a staged search (bound to `settings` with tune.with_parameters)."""
    context = tune.get_context()
    job = config[JOB_KEY]
    name = f"config_{int(job['config']):04d}"
    writer = f"{context.get_trial_name()} ({name})"
    with trial_run(settings, run_key(context.get_trial_id(), config), name, writer, JOBS) as run:
        params = {k: v for k, v in config.items() if k != JOB_KEY}
        # An upstream (on the CAM and pseudo rungs) has seed and refine knobs only: DeepLab keeps the
        # base config's settings, which its jobs never run. Its every job logs the same parameters.
        stages = wsss.STAGES[:2] if int(job["rung"]) < 2 else None
        space, cfg = trial_config(settings.search, settings, params, stages=stages)
        parent = job.get("parent")
        upstream = "-" if parent is None else f"config-{int(parent)}"  # the stage tree: a child's upstream
        tags = {"wsss.searcher": "staged", "wsss.upstream_config": upstream}
        describe_run(run, settings, space, cfg, tags, stages)
        extra = job_overrides(cfg, job, settings)
        space, job_cfg = trial_config(settings.search, settings, params, extra, stages)
        # The job's own name in what it builds, so that its rerun counts what it computed (own_computation)
        builder = trial_builder(settings, context.get_trial_id())
        data, store, lock = open_pipeline(run, settings, job_cfg, builder)
        outcomes: list[Any] = []
        wsss.run_pipeline(job_cfg, data, store, on_stage=outcomes.append, lock=lock, until=job["until"])
        logged, value = job_metrics(outcomes, job, settings.search.metric, builder)
        rung = int(job["rung"])
        run.metrics(logged, step=rung)
        run.tags(
            {
                "wsss.rung": RUNG_NAMES[rung],
                "wsss.reused": ",".join(o.stage for o in outcomes if o.cached) or "-",
            }
            | {f"wsss.key.{o.stage}": o.key for o in outcomes}
        )
        with tempfile.TemporaryDirectory() as tmp:
            for outcome in outcomes:
                if not outcome.cached:
                    reports = wsss.write_stage_report(
                        outcome, {o.stage: o for o in outcomes}, data, Path(tmp)
                    )
                    run.files(reports, f"stages/{RUNG_NAMES[rung]}")
        if rung >= FULL_RUNG:
            run.end("FINISHED", "finished")
        else:
            run.end("KILLED", f"stopped at {RUNG_NAMES[rung]}")
        flush_and_trim(run, settings, store)
        computed = {
            f"{o.stage}_compute_seconds": o.compute_seconds for o in own_computation(outcomes, builder)
        }
        # The full rung's held-out score (data.holdout_split), which no job is chosen on: what a search
        # is scored by afterwards (tests/benchmarks/validate_replay.py).
        held = {k: logged[k] for k in ("holdout_miou",) if k in logged and rung == FULL_RUNG}
        tune.report({"objective": value, "rung": RUNG_NAMES[rung], **computed, **held})
