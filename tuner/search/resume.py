"""`wsss-tune resume`: continue an experiment's latest search from Tune's saved state, anywhere.

The search's options come from its MLflow parent run, its parsed spaces and base config from
`STORAGE/searches/NAME.json` (tuner.search.record), and its Tune state from the storage given now (a copy
of the storage folder, the bucket seen from a new head) or else the one it was started with. Trials
get today's tracking URI, store and node caches; nothing depends on the first driver's files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

import wsss
from tuner import internals
from tuner.search import record
from tuner.search.driver import (
    OPTIONS_TAG,
    absolute,
    base_settings,
    local_workdir,
    run_fit,
    trainable,
    trial_settings,
)
from tuner.search.options import SearchOptions
from tuner.search.searcher import StageAwareOptunaSearch
from tuner.search.settle import mark_interrupted
from tuner.search.strategy import StageASHA
from tuner.search.study import fetch_snapshot, study_path
from tuner.search.study import load as load_study
from tuner.spaces.space import Base, SearchSpace, load_search
from tuner.tracking.runs import ROLE, RunStatusCallback, existing_tracking_uri, set_tags

log = logging.getLogger(__name__)


def latest_search(client: MlflowClient, experiment: str) -> Any:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise wsss.ConfigError(
            f"--experiment {experiment}: no such MLflow experiment at {client.tracking_uri}"
        )
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{ROLE}` = 'search'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise wsss.ConfigError(f"--experiment {experiment}: holds no search")
    return runs[0]


def recorded_options(parent: Any, experiment: str) -> tuple[str, SearchOptions]:
    try:
        recorded = json.loads(parent.data.tags[OPTIONS_TAG])
        name = recorded.pop("name")
        return name, SearchOptions(**{**recorded, "space_files": tuple(recorded["space_files"])})
    except (KeyError, TypeError, ValueError, AttributeError):
        raise wsss.ConfigError(
            f"--experiment {experiment}: its search run {parent.info.run_id} holds no resumable record "
            "(made by another version of wsss-tune?)"
        ) from None


def _resumable(options: SearchOptions, storage: str, name: str, experiment: str) -> SearchOptions:
    """The options with the storage that holds the search's Tune state: the one given now (a copy of
    the storage folder, a bucket mounted elsewhere) or else the one the search was started with."""
    for candidate in dict.fromkeys([absolute(storage), absolute(options.storage)]):
        if tune.Tuner.can_restore(f"{candidate}/tune/{name}"):
            return replace(options, storage=candidate)
    raise wsss.ConfigError(
        f"--experiment {experiment}: no resumable Tune state of search {name} under {storage}/tune "
        f"nor {options.storage}/tune; pass the search's --storage"
    )


def _space_and_base_settings(options: SearchOptions, name: str) -> tuple[SearchSpace, dict[str, Any] | None]:
    found = record.read(absolute(options.storage), name)
    if found is not None:
        return found
    # A search started by an earlier version of wsss-tune has no record: its files must still exist.
    base = base_settings(options.config)
    return load_search(options.space_files, Base(base)), base


def _restored(path: str, trainable: Any, callback: RunStatusCallback, study_file: Path) -> tune.Tuner:
    tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    # The searcher's study journal moves with the storage folder; the restored searcher reopens it
    # from here (StageAwareOptunaSearch.restore).
    searcher = internals.restored_searcher(tuner)
    if isinstance(searcher, StageAwareOptunaSearch):
        searcher.study_file = str(study_file)
    # Tune restores its run config, callbacks included, from the pickled experiment state: they would
    # write to the tracking URI the search started with. Ray 2.60 has no public way to replace them.
    run_config = internals.restored_run_config(tuner)
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, RunStatusCallback)]
    run_config.callbacks.append(callback)
    return tuner


def resume_search(experiment: str, tracking_uri: str | None, storage: str) -> str:
    """Continue the experiment's latest search from Tune's saved state (searcher state included), on
    this Ray cluster, with today's tracking URI, storage folder and node caches."""
    uri = existing_tracking_uri(tracking_uri, local_workdir(storage))
    client = MlflowClient(uri)
    parent = latest_search(client, experiment)
    name, options = recorded_options(parent, experiment)
    options = replace(_resumable(options, storage, name, experiment), tracking_uri=uri)
    space, base = _space_and_base_settings(options, name)
    ids = (parent.info.experiment_id, parent.info.run_id)
    mark_interrupted(client, *ids)  # if the driver died without settling them
    client.update_run(ids[1], status="RUNNING")
    path = f"{options.storage}/tune/{name}"
    set_tags(client, ids[1], {"wsss.tune_path": path})
    log.info("resuming %s from %s", name, path)

    def factory(lock_actor: str | None, callback: RunStatusCallback) -> tune.Tuner:
        settings = trial_settings(options, space, base, ids, lock_actor)
        study_file = study_path(options.storage, options.experiment)
        if not study_file.is_file():  # a new head: the journal was on the old one's disk
            fetch_snapshot(path, study_file)
        tuner = _restored(path, trainable(settings, options), callback, study_file)
        scheduler = internals.restored_scheduler(tuner)
        if isinstance(scheduler, StageASHA):
            trials = load_study(options.storage, options.experiment).get_trials(deepcopy=False)
            log.info(
                "resume: %d rung records rebuilt from the study", scheduler.restore_rungs(trials, space.mode)
            )
        return tuner

    return run_fit(factory, options, uri, ids, space)
