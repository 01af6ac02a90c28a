"""One trial: a full seed -> refine -> segment pipeline through the public `wsss` API.

It reports to Tune after every stage (`training_iteration` = stage number), with `objective` = the
stage's proxy (best-threshold CAM mIoU, then pseudo-mask mIoU, then the search metric), so ASHA
compares like with like at each stage boundary. Everything is logged to the trial's MLflow child run
from here, the worker. The run is ended before the final report: at the last stage the scheduler stops
the trial as soon as the report arrives, and a stopped trial's thread never resumes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from ray import tune

import wsss
from tuner.locks import ActorLock
from tuner.spaces import CHOICE, SearchSpace, load_search
from tuner.tracking import (
    ATTEMPT,
    DATA_FINGERPRINT,
    DATA_LOCATION,
    PARENT_TAG,
    ROLE,
    STATUS,
    SUPERSEDED,
    TRIAL_ID,
    attempts,
    flatten,
    log_files,
    log_metrics,
    log_params,
    set_tags,
)

log = logging.getLogger(__name__)

STAGE_PROXY = {"seed": "cam_miou_best", "refine": "pseudo_miou"}
# What Tune sees (and prints); MLflow gets every metric.
TUNE_KEYS = ("objective", "cam_miou_best", "pseudo_miou", "val_miou", "compute_seconds")


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial needs besides its sampled config; plain values, so Tune can pickle it."""

    space_files: tuple[str, ...]
    data_dir: str | None
    store_uri: str
    cache_dir: str | None  # node-local; None = wsss.default_cache_dir() on whichever node runs the trial
    experiment_id: str
    parent_run_id: str
    threads: int
    lock_actor: str | None  # lease actor for stores without file locks (object stores)
    base_config: str | None = None  # a preset name or an absolute YAML path the spaces override


def trial_config(search: SearchSpace, settings: TrialSettings, config: dict[str, Any]) -> tuple[str, Any]:
    """(space name, resolved wsss config) for a Tune config; torch threads follow the trial's CPUs."""
    overrides = search.overrides(config)
    overrides |= {"runtime.threads": settings.threads, "runtime.progress": False}
    dotted = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return config[CHOICE], wsss.load_config(settings.base_config, dotted)


def stage_objective(stage: str, so_far: dict[str, float], metric: str) -> float:
    """What ASHA and Optuna see after `stage`: the stage's proxy, then the search metric at the end.

    `so_far` holds every metric of the stages finished so far (the search metric may come from an
    earlier stage, e.g. pseudo_miou).
    """
    return so_far[STAGE_PROXY[stage]] if stage in STAGE_PROXY else so_far[metric]


def _cache_dir(settings: TrialSettings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else wsss.default_cache_dir()


class _TrialLog:
    """The trial's MLflow child run and what it has spent so far."""

    def __init__(self, client: MlflowClient, run_id: str, data: Any, metric: str) -> None:
        self.client, self.run_id, self.data, self.metric = client, run_id, data, metric
        self.outcomes: dict[str, Any] = {}
        self.so_far: dict[str, float] = {}
        self.spent = self.without_reuse = 0.0

    def reused(self) -> list[str]:
        return [stage for stage, outcome in self.outcomes.items() if outcome.cached]

    def stage_done(self, outcome: Any) -> dict[str, Any]:
        self.outcomes[outcome.stage] = outcome
        step = wsss.STAGES.index(outcome.stage) + 1
        self.without_reuse += outcome.compute_seconds
        self.spent += 0.0 if outcome.cached else outcome.compute_seconds
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
        log_metrics(self.client, self.run_id, metrics, step=step, timestamp=int(time.time() * 1000))
        tags = {"wsss.reused": ",".join(self.reused()) or "-", f"wsss.key.{outcome.stage}": outcome.key}
        set_tags(self.client, self.run_id, tags)
        with tempfile.TemporaryDirectory() as tmp:
            files = wsss.write_stage_report(outcome, self.outcomes, self.data, Path(tmp))
            log_files(self.client, self.run_id, files, "stages")
        return metrics


def _open_run(client: MlflowClient, settings: TrialSettings, context: Any) -> str:
    """This attempt's child run. Runs of earlier attempts of the same trial (a resumed or retried
    trial) keep their status and are marked superseded, so every trial has one current run."""
    trial_id = context.get_trial_id()
    earlier = attempts(client, settings.experiment_id, settings.parent_run_id, trial_id)
    tags = {PARENT_TAG: settings.parent_run_id, ROLE: "trial", TRIAL_ID: trial_id}
    tags[ATTEMPT] = str(len(earlier) + 1)
    name = context.get_trial_name()
    run_id = client.create_run(settings.experiment_id, run_name=name, tags=tags).info.run_id
    for run in earlier:
        if run.data.tags.get(SUPERSEDED) != "true":
            set_tags(client, run.info.run_id, {SUPERSEDED: "true", "wsss.superseded_by": run_id})
        if run.info.status == "RUNNING":  # its process is gone: it was cut off, not finished
            set_tags(client, run.info.run_id, {STATUS: "interrupted"})
            client.set_terminated(run.info.run_id, "KILLED")
    return run_id


def run_trial(config: dict[str, Any], settings: TrialSettings) -> None:
    """The Tune trainable (bound to `settings` with tune.with_parameters)."""
    context = tune.get_context()
    client = MlflowClient()  # MLFLOW_TRACKING_URI comes from the Ray runtime environment
    run_id = _open_run(client, settings, context)  # first, so that every failure below is recorded
    try:
        search = load_search(settings.space_files)
        space, cfg = trial_config(search, settings, config)
        tags = {
            "wsss.space": space,
            "wsss.method": cfg.seed.method,
            "wsss.metric": search.metric,
            "wsss.mode": search.mode,
            "wsss.node": ray.get_runtime_context().get_node_id(),
        }
        set_tags(client, run_id, tags)
        log_params(client, run_id, flatten(wsss.to_mapping(cfg)))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "config.yaml").write_text(wsss.dump_config(cfg))
            client.log_artifact(run_id, str(Path(tmp) / "config.yaml"))
        cache = _cache_dir(settings)
        data = wsss.prepare_dataset(cfg, settings.data_dir, cache)
        # What an exported config needs to know it is run on the same data (wsss.provenance).
        location = settings.data_dir or wsss.SYNTHETIC_DATA
        set_tags(client, run_id, {DATA_FINGERPRINT: data.fingerprint, DATA_LOCATION: location})
        store = wsss.StageStore(settings.store_uri, cache_dir=cache / "store")
        lock = ActorLock(settings.lock_actor) if settings.lock_actor else None
        trial_log = _TrialLog(client, run_id, data, search.metric)

        def on_stage(outcome: Any) -> None:
            metrics = trial_log.stage_done(outcome)
            if outcome.stage == wsss.STAGES[-1]:
                set_tags(client, run_id, {STATUS: "finished"})
                client.set_terminated(run_id, "FINISHED")
            summary = {k: metrics[k] for k in TUNE_KEYS if k in metrics}
            tune.report({**summary, "stage": outcome.stage, "reused": ",".join(trial_log.reused()) or "-"})

        wsss.run_pipeline(cfg, data, store, on_stage=on_stage, lock=lock)
    except Exception as exc:
        set_tags(client, run_id, {STATUS: "failed", "wsss.error": wsss.user_message(exc)[:5000]})
        client.set_terminated(run_id, "FAILED")
        raise
