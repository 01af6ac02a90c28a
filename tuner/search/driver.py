"""A search: Ray Tune runs trials (full pipelines) proposed by Optuna TPE, ASHA prunes at stage
boundaries, MLflow records a parent run for the search and a child run per trial.

Storage layout under `--storage` (a folder, or s3://, gs://, an NFS path on a cluster):
    <storage>/store/    the stage store shared by every trial (and by `wsss run --workdir <storage>`)
    <storage>/tune/     Ray Tune's experiment state, for `wsss-tune resume`
    <storage>/searches/ each search's parsed spaces and base config (tuner.search.record), for `resume`
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

import wsss
from tuner import internals
from tuner.search import record
from tuner.search.job_searcher import StagedSearcher
from tuner.search.options import SearchOptions
from tuner.search.session import check_resources, code_version, ray_session, source_tags, trial_env
from tuner.search.settle import FINISH_WAIT, SearchFailed, SearchInterrupted, failure_summary, finish
from tuner.search.staged_search import budget_spent, log_ladder, staged_searcher
from tuner.search.strategy import log_fidelity, min_records, search_parts
from tuner.search.study import check_warm_start, search_identity
from tuner.search.study import load as load_study
from tuner.spaces.space import Base, SearchSpace, load_search
from tuner.tracking.runs import (
    NOTE,
    ROLE,
    RunStatusCallback,
    check_database,
    ensure_experiment,
    log_files,
    log_params,
    resolve_tracking_uri,
    set_tags,
    tracking_database,
)
from tuner.tracking.ui import leaderboard_link, view_tag
from tuner.tracking.write_queue import retry
from tuner.trial.job import run_job
from tuner.trial.locks import create_leases
from tuner.trial.settings import TrialSettings
from tuner.trial.trainable import final_iteration, run_trial

log = logging.getLogger(__name__)

OPTIONS_TAG = "wsss.options"


def absolute(location: str) -> str:
    return location if "://" in location else str(Path(location).absolute())


def base_settings(config: str | None) -> dict[str, Any] | None:
    """The base config's settings (a bad file fails here, naming its file and key)."""
    return None if config is None else wsss.config_source(config)


def local_workdir(storage: str) -> Path:
    """Where local files of a search go (the default MLflow database, artifacts): the storage folder,
    or the current folder when the storage is remote."""
    return Path(storage) if "://" not in storage else Path.cwd()


def trainable(settings: TrialSettings, options: SearchOptions) -> Any:
    """Tune's trainable: a full pipeline per trial, or one rung job per trial for the staged searcher."""
    bound = tune.with_parameters(run_job if options.searcher == "staged" else run_trial, settings=settings)
    return tune.with_resources(bound, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})


def trial_settings(
    options: SearchOptions,
    search: SearchSpace,
    base: dict[str, Any] | None,
    ids: tuple[str, str],
    lock_actor: str | None,
) -> TrialSettings:
    root = absolute(options.storage)
    cap = options.node_cache_gb
    return TrialSettings(
        search=search,
        data_dir=absolute(options.data) if options.data else None,
        store_uri=absolute(options.store) if options.store else f"{root}/store",
        cache_dir=options.cache_dir,
        experiment_id=ids[0],
        parent_run_id=ids[1],
        threads=max(1, int(options.cpus_per_trial)),
        lock_actor=lock_actor,
        base=base,
        tracking_wait=options.tracking_wait,
        node_cache_bytes=int(cap * 2**30) if cap is not None else None,
        short_fraction=options.short_fraction,
        gpus=options.gpus_per_trial,
        source_tags=source_tags(),
    )


def describe_search(options: SearchOptions, space: SearchSpace, link: str) -> str:
    """The parent run's description: what was searched, how, on what, and where to read it (`link`:
    the leaderboard in MLflow's UI, tuner.tracking.ui)."""
    spend = (
        f"budget {options.budget}, at most {options.samples} jobs"
        if options.budget
        else f"{options.samples} trials"
    )
    return (
        f"wsss-tune search over {', '.join(s.name for s in space.spaces)} with the {options.searcher} "
        f"searcher, {spend}, {options.concurrency} at a time; {space.mode}imise {space.metric}.\n\n"
        f"Data: {options.data or 'the embedded synthetic benchmark'}. Base config: "
        f"{options.config or 'the built-in defaults'}. The trials are this run's children; best first: "
        f"{link}, or `wsss-tune leaderboard --experiment {options.experiment}`; the best config: "
        f"`wsss-tune export --experiment {options.experiment} --out best.yaml`."
    )


def _start_parent(
    client: MlflowClient, options: SearchOptions, space: SearchSpace, name: str
) -> tuple[str, str]:
    experiment_id = ensure_experiment(
        client, options.experiment, local_workdir(options.storage) / "mlartifacts"
    )
    client.set_experiment_tag(experiment_id, *view_tag(space.metric, space.mode))
    link = leaderboard_link(client.tracking_uri, experiment_id, space.metric)
    tags = {ROLE: "search", "wsss.metric": space.metric, NOTE: describe_search(options, space, link)}
    run = client.create_run(experiment_id, run_name=name, tags=tags | source_tags())
    final = final_iteration(space.metric)
    records = min_records(options.asha_reduction_factor, options.rung_records)
    params = {
        "spaces": ",".join(s.name for s in space.spaces),
        "samples": options.samples,
        "seed": options.seed,
        "searcher": options.searcher,
        "sampler": "optuna TPESampler(multivariate=True, group=True, constant_liar=True)"
        + (" per stage (upstream, segment)" if options.searcher == "staged" else ""),
        "scheduler": f"StageASHA(rungs at stages {list(range(1, final))}, reduction_factor="
        f"{options.asha_reduction_factor}, min_records={records})"
        if final > 1 and options.searcher == "asha"
        else "FIFO (the staged planner promotes)"
        if options.searcher == "staged"
        else "FIFO (one stage: nothing to stop early)",
        "budget": options.budget or "-",
        "stages": ",".join(wsss.STAGES[:final]),
        "metric": space.metric,
        "mode": space.mode,
        "concurrency": options.concurrency,
        "cpus_per_trial": options.cpus_per_trial,
        "gpus_per_trial": options.gpus_per_trial,
        "code_version": code_version(),
        "data": options.data or "synthetic",
        "base_config": options.config or "defaults",
    }
    log_params(client, run.info.run_id, params)
    log_files(client, run.info.run_id, sorted({f for s in space.spaces for f in s.files}), "spaces")
    return experiment_id, run.info.run_id


def _tuner(
    options: SearchOptions,
    space: SearchSpace,
    settings: TrialSettings,
    name: str,
    callback: RunStatusCallback,
    identity: dict[str, str],
) -> tune.Tuner:
    search_alg, stopper = search_parts(space, options, Base(settings.base), identity)
    return tune.Tuner(
        trainable(settings, options),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode=space.mode,
            search_alg=search_alg,
            scheduler=stopper,
            num_samples=options.samples,
            max_concurrent_trials=options.concurrency,
            # A new trial runs in a finished one's actor (same resources): no process start, no
            # torch/wsss/CUDA initialisation per trial. Tune waits for the old trial's thread to end
            # (FunctionTrainable.reset_config) and starts a fresh actor when it does not; an errored
            # trial's actor is never reused. A budget test: 75 s -> 35 s.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=f"{absolute(options.storage)}/tune",
            callbacks=[callback],
            # A trial lost with its node (spot preemption) or failed runs again, on any node; the
            # stages it finished are in the store, and it continues its MLflow run.
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            verbose=1,
        ),
    )


def run_fit(
    tuner_factory: Any, options: SearchOptions, uri: str, ids: tuple[str, str], space: SearchSpace
) -> str:
    """Fit inside a Ray session; the parent run ends FINISHED, FAILED or KILLED whatever happens.

    `tuner_factory(lock_actor, callback)` makes the Tuner (a new one, or one restored by resume)."""
    client = MlflowClient(uri)
    callback = RunStatusCallback(uri, *ids, final_iteration=final_iteration(space.metric))
    status = "FAILED"
    try:
        with ray_session(options.address, trial_env(uri)):
            store = options.store or f"{absolute(options.storage)}/store"
            lock_actor, leases = None, None
            if "://" in store and not store.startswith("file://"):  # no file locks on object stores
                lock_actor = f"wsss-leases-{ids[1]}"
                leases = create_leases(lock_actor)  # held here: Ray ends an actor once its handles are gone
            tuner = tuner_factory(lock_actor, callback)
            searcher = internals.restored_searcher(tuner)
            results = tuner.fit()
            del leases
        if results.num_terminated + results.num_errors < options.samples and not budget_spent(searcher):
            status = "KILLED"
            raise SearchInterrupted()
        callback.close(FINISH_WAIT)  # every trial's status settled before they are counted
        if isinstance(searcher, StagedSearcher):
            log_ladder(client, searcher, ids[1])
        else:
            log_fidelity(client, options.storage, options.experiment, space, ids[1])
        failure = retry(lambda c: failure_summary(c, *ids), client, "summarise the trials", FINISH_WAIT)
        if failure is not None:
            raise SearchFailed(failure)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        finish(client, ids, status, callback)
    return ids[1]


def _prepare_data(space: SearchSpace, options: SearchOptions, base: dict[str, Any] | None) -> list[str]:
    """Open (or generate) each dataset the spaces use: bad data fails here rather than in every trial,
    and on one machine the synthetic benchmark is generated once, not by racing trials. Returns their
    fingerprints."""
    cache = Path(options.cache_dir) if options.cache_dir else wsss.default_cache_dir()
    fingerprints = []
    for method_space in space.spaces:
        data_keys = [f"{k}={json.dumps(v)}" for k, v in method_space.fixed.items() if k.startswith("data.")]
        data = wsss.prepare_dataset(wsss.load_config(base, data_keys), options.data, cache)
        fingerprints.append(data.fingerprint)
    return fingerprints


def run_search(options: SearchOptions) -> str:
    """Run a new search; returns the parent run id. Space and option mistakes fail before Ray starts."""
    options.validate()
    check_resources(options)
    if options.warm_start:  # a missing study fails here, before Ray starts
        load_study(options.storage, options.warm_start)
    base = base_settings(options.config)
    space = load_search(options.space_files, Base(base))
    if options.searcher == "staged":
        staged_searcher(space, options, Base(base))  # its mistakes (a metric before DeepLab) fail here
    uri = resolve_tracking_uri(options.tracking_uri, local_workdir(options.storage))
    check_database(uri)
    identity = search_identity(space.metric, space.mode, _prepare_data(space, options, base), base)
    if options.warm_start:  # another metric, direction, dataset or base config fails before Ray too
        check_warm_start(load_study(options.storage, options.warm_start), identity)
    # The random part keeps two searches of one experiment started in the same second apart.
    name = f"{options.experiment}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    record.write(absolute(options.storage), name, space, base)
    with tracking_database(uri) as client:  # two searches starting together take turns here
        experiment_id, parent_run_id = _start_parent(client, options, space, name)
    recorded = asdict(options) | {"tracking_uri": uri, "name": name}
    set_tags(
        client,
        parent_run_id,
        {OPTIONS_TAG: json.dumps(recorded), "wsss.tune_path": f"{absolute(options.storage)}/tune/{name}"},
    )
    ids = (experiment_id, parent_run_id)

    def factory(lock_actor: str | None, callback: RunStatusCallback) -> tune.Tuner:
        settings = trial_settings(options, space, base, ids, lock_actor)
        return _tuner(options, space, settings, name, callback, identity)

    return run_fit(factory, options, uri, ids, space)
