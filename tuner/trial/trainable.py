"""One trial: a full seed -> refine -> segment pipeline through the public `wsss` API.

It runs the stages up to the one that produces the search metric (a search on pseudo-mask mIoU never
trains DeepLab) and reports to Tune after every stage (`training_iteration` = stage number), with
`objective` = the stage's proxy (best-threshold CAM mIoU, then pseudo-mask mIoU) before the metric's
stage and the search metric at it, so ASHA compares like with like at each stage boundary.
Everything is logged to the trial's MLflow child run from here, the worker. The run is ended before
the final report: at the last stage the scheduler stops the trial as soon as the report arrives, and
a stopped trial's thread never resumes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray import tune

import wsss
from tuner.spaces.space import CHOICE, SearchSpace, stage_of_key
from tuner.tracking.runs import (
    DATA_FINGERPRINT,
    DATA_LOCATION,
    NOTE,
    TUNE_METRICS,
    flatten,
)
from tuner.trial.device import describe_device, loader_workers, trial_device
from tuner.trial.locks import ActorLock
from tuner.trial.run import TrialRun, flush_and_trim, trial_run
from tuner.trial.settings import TrialSettings

REUSE_KEY = "wsss_reuse"  # in a trial's Tune config: the upstream stage it was planned to reuse

log = logging.getLogger(__name__)

STAGE_PROXY = {"seed": "cam_miou_best", "refine": "pseudo_miou"}
# What Tune sees (and prints); MLflow gets every metric.
TUNE_KEYS = ("objective", *TUNE_METRICS)
# Set in a stage report when the stage came from the store: the scheduler does not judge it again
# (tuner.search.strategy.StageASHA).
STAGE_CACHED = "stage_cached"


def trial_config(
    search: SearchSpace,
    settings: TrialSettings,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    stages: tuple[str, ...] | None = None,
) -> tuple[str, Any]:
    """(space name, resolved wsss config) for a Tune config; torch threads follow the trial's CPUs, and
    so do a GPU trial's loader workers (tuner.trial.device.loader_workers).
    `extra`: dotted settings over the sampled ones (a staged job's schedule and rng_seed); `stages`:
    the stages whose knobs the config holds (tuner.spaces.space.SearchSpace.overrides)."""
    overrides = search.overrides(config, stages) | (extra or {})
    overrides |= {"runtime.threads": settings.threads, "runtime.progress": False}
    device = trial_device(settings.gpus)
    if device is not None:
        overrides["runtime.device"] = device
    dotted = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    cfg = wsss.load_config(settings.base, dotted)
    workers = loader_workers(settings.gpus, settings.threads, cfg.runtime.workers)
    return config[CHOICE], replace(cfg, runtime=replace(cfg.runtime, workers=workers))


def final_stage(metric: str) -> str:
    """The stage that produces `metric`: the last one a search on it runs."""
    return wsss.METRIC_STAGE[metric]


def final_iteration(metric: str) -> int:
    """The number of stage reports of a finished trial of a search on `metric`."""
    return wsss.STAGES.index(final_stage(metric)) + 1


def stage_objective(stage: str, so_far: dict[str, float], metric: str) -> float:
    """What ASHA and Optuna see after `stage`: the stage's proxy before the metric's stage, the
    search metric from it on (`so_far` holds every metric of the stages finished so far)."""
    if wsss.STAGES.index(stage) >= wsss.STAGES.index(final_stage(metric)):
        return so_far[metric]
    return so_far[STAGE_PROXY[stage]]


def _cache_dir(settings: TrialSettings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else wsss.default_cache_dir()


class _TrialLog:
    """What the trial has spent so far, and its stage metrics, logged to its run."""

    def __init__(self, run: TrialRun, data: Any, metric: str, builder: str = "") -> None:
        self.run, self.data, self.metric, self.builder = run, data, metric, builder
        self.outcomes: dict[str, Any] = {}
        self.so_far: dict[str, float] = {}
        self.spent = self.without_reuse = 0.0

    def reused(self) -> list[str]:
        return [stage for stage, outcome in self.outcomes.items() if outcome.cached]

    def stage_done(self, outcome: Any) -> dict[str, Any]:
        self.outcomes[outcome.stage] = outcome
        step = wsss.STAGES.index(outcome.stage) + 1
        self.without_reuse += outcome.compute_seconds
        self.spent += outcome.compute_seconds if paid_by(outcome, self.builder) else 0.0
        scalars = {
            k: v for k, v in outcome.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        metrics = scalars | {
            f"{outcome.stage}_seconds": outcome.seconds,
            f"{outcome.stage}_cached": float(outcome.cached),
            f"{outcome.stage}_compute_seconds": outcome.compute_seconds,
            "compute_seconds": self.spent,
            "compute_seconds_without_reuse": self.without_reuse,
        }
        self.so_far |= metrics
        metrics["objective"] = stage_objective(outcome.stage, self.so_far, self.metric)
        self.run.metrics(metrics, step)
        self.run.tags(
            {"wsss.reused": ",".join(self.reused()) or "-", f"wsss.key.{outcome.stage}": outcome.key}
        )
        with tempfile.TemporaryDirectory() as tmp:
            self.run.files(wsss.write_stage_report(outcome, self.outcomes, self.data, Path(tmp)), "stages")
        return metrics


def trial_note(settings: TrialSettings, space: str, cfg: Any, stages: tuple[str, ...] | None = None) -> str:
    """A trial run's description in MLflow's UI: what it is and what was sampled for it (the knobs of
    `stages` only, for a staged upstream job, whose DeepLab knobs are not sampled yet)."""
    values = flatten(wsss.to_mapping(cfg))
    knobs = [k for k in settings.search.knobs(space) if stages is None or stage_of_key(k) in stages]
    sampled = ", ".join(f"{k}={values[k]}" for k in knobs if k in values)
    search = settings.search
    return (
        f"A {space} trial ({cfg.seed.method}) of a search that {search.mode}imises {search.metric}; "
        f"sampled: {sampled or 'nothing (the space fixes every setting)'}. Its stages' keys are the "
        "wsss.key.* tags; config.yaml (artifacts) reruns it with `wsss run config.yaml`."
    )


def describe_run(
    run: TrialRun,
    settings: TrialSettings,
    space: str,
    cfg: Any,
    tags: dict[str, str],
    stages: tuple[str, ...] | None = None,
) -> None:
    """The run's tags (its description too), parameters and config.yaml (the config to export and
    rerun); `stages`: those whose knobs were sampled (trial_config)."""
    run.tags(
        {
            NOTE: trial_note(settings, space, cfg, stages),
            "wsss.space": space,
            "wsss.method": cfg.seed.method,
            "wsss.metric": settings.search.metric,
            "wsss.mode": settings.search.mode,
            "wsss.node": ray.get_runtime_context().get_node_id(),
            "wsss.device": describe_device(settings.gpus),
        }
        | settings.source_tags
        | tags
    )
    run.params(flatten(wsss.to_mapping(cfg)))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(wsss.dump_config(cfg))
        run.files([Path(tmp) / "config.yaml"], None)


def paid_by(outcome: Any, builder: str) -> bool:
    """Whether the trial stamped `builder` paid for a stage: it computed it now, or an earlier attempt
    of it did (Tune runs a trial again after a failure or on `wsss-tune resume`; it then finds what its
    first attempt built in the store, a spend no report counted)."""
    return not outcome.cached or (bool(builder) and outcome.built_by == builder)


def trial_builder(settings: TrialSettings, trial_id: str) -> str:
    """What a trial's builds are stamped with in the store: its search's run and its Tune trial id,
    both the same when Tune runs the trial again (after a failure, or on `wsss-tune resume`)."""
    return f"{settings.parent_run_id}/{trial_id}"


def open_pipeline(
    run: TrialRun, settings: TrialSettings, cfg: Any, builder: str = ""
) -> tuple[Any, Any, ActorLock | None]:
    """(dataset, stage store, lock) for running `cfg`'s pipeline on this node; what the store builds
    names `builder` in its manifest."""
    cache = _cache_dir(settings)
    data = wsss.prepare_dataset(cfg, settings.data_dir, cache)
    # What an exported config needs to know it is run on the same data (wsss.provenance).
    location = settings.data_dir or wsss.SYNTHETIC_DATA
    run.tags({DATA_FINGERPRINT: data.fingerprint, DATA_LOCATION: location})
    run.dataset(data, location)
    store = wsss.StageStore(settings.store_uri, cache_dir=cache / "store", builder=builder)
    lock = ActorLock(settings.lock_actor) if settings.lock_actor else None
    return data, store, lock


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """The Tune trainable (bound to `settings` with tune.with_parameters).

    MLflow is best-effort here: its writes are queued and retried (tuner.tracking.write_queue), and
    each report to Tune waits at most `settings.tracking_wait` seconds for them, so an outage of the
    tracking server neither fails the trial nor stalls it for long.
    """
    context = tune.get_context()
    name = context.get_trial_name()
    with trial_run(settings, context.get_trial_id(), name, name) as run:
        space, cfg = trial_config(settings.search, settings, config)
        # The upstream stage the searcher planned this trial to reuse (tuner.search.reuse), or "-".
        describe_run(run, settings, space, cfg, {"wsss.planned_reuse": str(config.get(REUSE_KEY, "-"))})
        builder = trial_builder(settings, context.get_trial_id())
        data, store, lock = open_pipeline(run, settings, cfg, builder)
        trial_log = _TrialLog(run, data, settings.search.metric, builder)

        def on_stage(outcome: Any) -> None:
            metrics = trial_log.stage_done(outcome)
            if outcome.stage == final_stage(settings.search.metric):
                run.end("FINISHED", "finished")
            flush_and_trim(run, settings, store)  # after the report Ray may stop this trial
            summary = {k: metrics[k] for k in TUNE_KEYS if k in metrics}
            reused = ",".join(trial_log.reused()) or "-"
            tune.report({**summary, "stage": outcome.stage, "reused": reused, STAGE_CACHED: outcome.cached})

        until = final_stage(settings.search.metric)
        wsss.run_pipeline(cfg, data, store, on_stage=on_stage, lock=lock, until=until)
