"""A search: Ray Tune runs trials (full pipelines) proposed by Optuna TPE, ASHA prunes at stage
boundaries, MLflow records a parent run for the search and a child run per trial.

Storage layout under `--storage` (a folder, or s3://, gs://, an NFS path on a cluster):
    <storage>/store/    the stage store shared by every trial (and by `wsss run --workdir <storage>`)
    <storage>/tune/     Ray Tune's experiment state, for `wsss-tune resume`
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler

import wsss
from tuner import record
from tuner.journal import retry
from tuner.locks import create_leases
from tuner.searcher import StageAwareOptunaSearch
from tuner.spaces import SearchSpace, load_search
from tuner.tracking import (
    FINAL_ITERATION,
    ROLE,
    STATUS,
    SUPERSEDED,
    RunStatusCallback,
    child_runs,
    close_dangling,
    ensure_experiment,
    existing_tracking_uri,
    log_files,
    log_params,
    resolve_tracking_uri,
    set_tags,
)
from tuner.trainable import TrialSettings, run_trial

log = logging.getLogger(__name__)

OPTIONS_TAG = "wsss.options"


@dataclass(frozen=True)
class SearchOptions:
    space_files: tuple[str, ...]
    samples: int
    experiment: str
    data: str | None = None
    concurrency: int = 1
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    storage: str = "wsss-work"
    store: str | None = None
    tracking_uri: str | None = None
    seed: int = 0
    reduction_factor: int = 2
    config: str | None = None  # base config (preset name or YAML file) that the spaces override
    cache_dir: str | None = None  # node-local cache for trials (None: ~/.cache/wsss on each node)
    max_failures: int = 3  # retries of a trial that failed or was lost with its node (spot preemption)
    tracking_wait: float = 120.0  # seconds a trial's report waits for MLflow during an outage
    node_cache_gb: float | None = None  # cap on each node's copies of remote stage artifacts

    def validate(self) -> None:
        for name, ok in (
            ("--samples", self.samples >= 1),
            ("--concurrency", self.concurrency >= 1),
            ("--cpus-per-trial", self.cpus_per_trial > 0),
            ("--gpus-per-trial", self.gpus_per_trial >= 0),
            ("--reduction-factor", self.reduction_factor >= 2),
            ("--max-failures", self.max_failures >= 0),
            ("--tracking-wait", self.tracking_wait >= 0),
            ("--node-cache-gb", self.node_cache_gb is None or self.node_cache_gb > 0),
        ):
            if not ok:
                raise wsss.ConfigError(f"{name}: {getattr(self, name[2:].replace('-', '_'))} is out of range")
        if not self.experiment:
            raise wsss.ConfigError("--experiment: give the search a name")


def _absolute(location: str) -> str:
    return location if "://" in location else str(Path(location).absolute())


def _base(config: str | None) -> dict[str, Any] | None:
    """The base config's settings (a bad file fails here, naming its file and key)."""
    return None if config is None else wsss.config_source(config)


def local_workdir(storage: str) -> Path:
    """Where local files of a search go (the default MLflow database, artifacts): the storage folder,
    or the current folder when the storage is remote."""
    return Path(storage) if "://" not in storage else Path.cwd()


def code_version() -> str:
    """wsss's version plus the git commit of its checkout, when there is one."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = "unknown"
    return f"{wsss.__version__}+{sha}"


# MLflow's own HTTP retries (default: 7 tries with doubling waits, 120 s timeouts) would hold a
# trial's journal on one write for minutes; the journal retries anyway, so calls fail fast.
_MLFLOW_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def trial_env(uri: str) -> dict[str, str]:
    """Environment variables for every trial: where MLflow is, and how long its HTTP calls may take."""
    return {"MLFLOW_TRACKING_URI": uri} | {k: os.environ.get(k, v) for k, v in _MLFLOW_HTTP.items()}


@contextlib.contextmanager
def ray_session(address: str | None, env: dict[str, str]) -> Iterator[None]:
    """Connect to (or start) Ray with `env` in the workers' runtime environment; disconnect afterwards."""
    if ray.is_initialized():
        raise wsss.WsssError("Ray is already initialised in this process; run the search in a fresh process")
    ray.init(
        address=address,
        runtime_env={"env_vars": env},
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    try:
        yield
    finally:
        ray.shutdown()


def _trainable(settings: TrialSettings, options: SearchOptions) -> Any:
    bound = tune.with_parameters(run_trial, settings=settings)
    return tune.with_resources(bound, {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})


def _settings(
    options: SearchOptions,
    search: SearchSpace,
    base: dict[str, Any] | None,
    ids: tuple[str, str],
    lock_actor: str | None,
) -> TrialSettings:
    root = _absolute(options.storage)
    cap = options.node_cache_gb
    return TrialSettings(
        search=search,
        data_dir=_absolute(options.data) if options.data else None,
        store_uri=_absolute(options.store) if options.store else f"{root}/store",
        cache_dir=options.cache_dir,
        experiment_id=ids[0],
        parent_run_id=ids[1],
        threads=max(1, int(options.cpus_per_trial)),
        lock_actor=lock_actor,
        base=base,
        tracking_wait=options.tracking_wait,
        node_cache_bytes=int(cap * 2**30) if cap is not None else None,
    )


def _start_parent(
    client: MlflowClient, options: SearchOptions, space: SearchSpace, name: str
) -> tuple[str, str]:
    experiment_id = ensure_experiment(
        client, options.experiment, local_workdir(options.storage) / "mlartifacts"
    )
    run = client.create_run(experiment_id, run_name=name, tags={ROLE: "search", "wsss.metric": space.metric})
    params = {
        "spaces": ",".join(s.name for s in space.spaces),
        "samples": options.samples,
        "seed": options.seed,
        "sampler": "optuna TPESampler(multivariate=True)",
        "scheduler": f"ASHA(max_t={FINAL_ITERATION}, "
        f"grace_period=1, reduction_factor={options.reduction_factor})",
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


def _searcher(space: SearchSpace, options: SearchOptions, study_name: str) -> StageAwareOptunaSearch:
    # Optuna 5 no longer warns about independent sampling by default (the flag is deprecated).
    sampler = optuna.samplers.TPESampler(seed=options.seed, multivariate=True)
    # With a define-by-run space Tune does not pass metric/mode on to the searcher: it needs its own.
    return StageAwareOptunaSearch(
        space=space.define,
        metric="objective",
        mode=space.mode,
        sampler=sampler,
        study_name=study_name,
        final_iteration=FINAL_ITERATION,
    )


def _tuner(
    options: SearchOptions,
    space: SearchSpace,
    settings: TrialSettings,
    name: str,
    callback: RunStatusCallback,
) -> tune.Tuner:
    return tune.Tuner(
        _trainable(settings, options),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode=space.mode,
            search_alg=_searcher(space, options, study_name=name),
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=FINAL_ITERATION,
                grace_period=1,
                reduction_factor=options.reduction_factor,
            ),
            num_samples=options.samples,
            max_concurrent_trials=options.concurrency,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=f"{_absolute(options.storage)}/tune",
            callbacks=[callback],
            # A trial lost with its node (spot preemption) or failed runs again, on any node; the
            # stages it finished are in the store, and it continues its MLflow run.
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            verbose=1,
        ),
    )


class SearchInterrupted(KeyboardInterrupt):
    """Tune stopped on Ctrl-C (it returns normally then); the search can be resumed."""


class SearchFailed(wsss.WsssError):
    """The search ran to its end, but no trial finished (exit status 1: not a usage error)."""

    exit_status = 1


def _failure_summary(client: MlflowClient, experiment_id: str, parent_run_id: str) -> str | None:
    """None if a trial finished; else one line with the counts and the most common trial error,
    also recorded on the parent run (tags wsss.error and wsss.trial_errors)."""
    runs = [
        r for r in child_runs(client, experiment_id, parent_run_id) if r.data.tags.get(SUPERSEDED) != "true"
    ]
    if any(r.info.status == "FINISHED" for r in runs):
        return None
    errors = Counter(
        r.data.tags.get("wsss.error", "unknown error (see the trial's error.txt in the Tune folder)")
        for r in runs
        if r.info.status != "KILLED"
    )
    failed = sum(errors.values())
    summary = f"no trial finished ({failed} failed, {len(runs) - failed} pruned, of {len(runs)})"
    if errors:
        cause, count = errors.most_common(1)[0]
        summary += f"; most common cause ({count} of {failed} failed): {cause}"
    counts = json.dumps([{"error": e, "trials": n} for e, n in errors.most_common()])
    set_tags(client, parent_run_id, {"wsss.error": summary[:5000], "wsss.trial_errors": counts[:5000]})
    return summary


def _mark_interrupted(client: MlflowClient, experiment_id: str, parent_run_id: str) -> None:
    """Trials cut off by an interruption end KILLED (interrupted); on resume they run again and
    continue these runs, reusing the stages they finished."""
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status == "RUNNING":
            set_tags(client, run.info.run_id, {STATUS: "interrupted"})
            client.set_terminated(run.info.run_id, "KILLED")


class TrackingUnavailable(wsss.WsssError):
    """MLflow stayed unreachable at the end of a search (exit status 1): results are in Tune's state."""

    exit_status = 1


# How long the driver waits for MLflow at the end of a search (trials already finished by then).
FINISH_WAIT = 600.0


def _finish(client: MlflowClient, ids: tuple[str, str], status: str, callback: RunStatusCallback) -> None:
    """Settle every run of the search; waits out an MLflow outage for up to FINISH_WAIT seconds."""
    experiment_id, parent_run_id = ids

    def write(client: MlflowClient) -> None:
        if status == "KILLED":
            _mark_interrupted(client, experiment_id, parent_run_id)
        closed = close_dangling(client, experiment_id, parent_run_id)
        if closed:
            log.warning("%d trial run(s) never reported back and were marked FAILED", closed)
        client.set_terminated(parent_run_id, status)

    try:
        callback.close(FINISH_WAIT)
        retry(write, client, "close the search's runs", FINISH_WAIT)
    except Exception as exc:
        raise TrackingUnavailable(
            f"{client.tracking_uri}: MLflow unreachable for {FINISH_WAIT:.0f} s at the end of the search "
            f"({type(exc).__name__}); its runs are left as they were. Trial results are in Tune's state; "
            "once MLflow is back, `wsss-tune resume` settles them."
        ) from None


def _run(tuner_factory: Any, options: SearchOptions, uri: str, ids: tuple[str, str]) -> str:
    """Fit inside a Ray session; the parent run ends FINISHED, FAILED or KILLED whatever happens."""
    client = MlflowClient(uri)
    callback = RunStatusCallback(uri, *ids)
    status = "FAILED"
    try:
        with ray_session(options.address, trial_env(uri)):
            store = options.store or f"{_absolute(options.storage)}/store"
            lock_actor, leases = None, None
            if "://" in store and not store.startswith("file://"):  # no file locks on object stores
                lock_actor = f"wsss-leases-{ids[1]}"
                leases = create_leases(lock_actor)  # held here: Ray ends an actor once its handles are gone
            results = tuner_factory(lock_actor, callback).fit()
            del leases
        if results.num_terminated + results.num_errors < options.samples:
            status = "KILLED"
            raise SearchInterrupted()
        callback.close(FINISH_WAIT)  # every trial's status settled before they are counted
        failure = retry(lambda c: _failure_summary(c, *ids), client, "summarise the trials", FINISH_WAIT)
        if failure is not None:
            raise SearchFailed(failure)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _finish(client, ids, status, callback)
    return ids[1]


def _prepare_data(space: SearchSpace, options: SearchOptions, base: dict[str, Any] | None) -> None:
    """Open (or generate) each dataset the spaces use: bad data fails here rather than in every trial,
    and on one machine the synthetic benchmark is generated once, not by racing trials."""
    cache = Path(options.cache_dir) if options.cache_dir else wsss.default_cache_dir()
    for method_space in space.spaces:
        data_keys = [f"{k}={json.dumps(v)}" for k, v in method_space.fixed.items() if k.startswith("data.")]
        wsss.prepare_dataset(wsss.load_config(base, data_keys), options.data, cache)


def run_search(options: SearchOptions) -> str:
    """Run a new search; returns the parent run id. Space and option mistakes fail before Ray starts."""
    options.validate()
    base = _base(options.config)
    space = load_search(options.space_files)
    _prepare_data(space, options, base)
    uri = resolve_tracking_uri(options.tracking_uri, local_workdir(options.storage))
    client = MlflowClient(uri)
    name = f"{options.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
    record.write(_absolute(options.storage), name, space, base)
    experiment_id, parent_run_id = _start_parent(client, options, space, name)
    recorded = asdict(options) | {"tracking_uri": uri, "name": name}
    set_tags(
        client,
        parent_run_id,
        {OPTIONS_TAG: json.dumps(recorded), "wsss.tune_path": f"{_absolute(options.storage)}/tune/{name}"},
    )
    ids = (experiment_id, parent_run_id)

    def factory(lock_actor: str | None, callback: RunStatusCallback) -> tune.Tuner:
        settings = _settings(options, space, base, ids, lock_actor)
        return _tuner(options, space, settings, name, callback)

    return _run(factory, options, uri, ids)


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


def _recorded_options(parent: Any, experiment: str) -> tuple[str, SearchOptions]:
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
    for candidate in dict.fromkeys([_absolute(storage), _absolute(options.storage)]):
        if tune.Tuner.can_restore(f"{candidate}/tune/{name}"):
            return replace(options, storage=candidate)
    raise wsss.ConfigError(
        f"--experiment {experiment}: no resumable Tune state of search {name} under {storage}/tune "
        f"nor {options.storage}/tune; pass the search's --storage"
    )


def _space_and_base(options: SearchOptions, name: str) -> tuple[SearchSpace, dict[str, Any] | None]:
    found = record.read(_absolute(options.storage), name)
    if found is not None:
        return found
    # A search started by an earlier version of wsss-tune has no record: its files must still exist.
    return load_search(options.space_files), _base(options.config)


def _restored(path: str, trainable: Any, callback: RunStatusCallback) -> tune.Tuner:
    tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    # Tune restores its run config, callbacks included, from the pickled experiment state: they would
    # write to the tracking URI the search started with. Ray 2.60 has no public way to replace them.
    run_config = tuner._local_tuner.get_run_config()  # type: ignore[union-attr]
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, RunStatusCallback)]
    run_config.callbacks.append(callback)
    return tuner


def resume_search(experiment: str, tracking_uri: str | None, storage: str) -> str:
    """Continue the experiment's latest search from Tune's saved state (searcher state included), on
    this Ray cluster, with today's tracking URI, storage folder and node caches."""
    uri = existing_tracking_uri(tracking_uri, local_workdir(storage))
    client = MlflowClient(uri)
    parent = latest_search(client, experiment)
    name, options = _recorded_options(parent, experiment)
    options = replace(_resumable(options, storage, name, experiment), tracking_uri=uri)
    space, base = _space_and_base(options, name)
    ids = (parent.info.experiment_id, parent.info.run_id)
    _mark_interrupted(client, *ids)  # if the driver died without settling them
    client.update_run(ids[1], status="RUNNING")
    path = f"{options.storage}/tune/{name}"
    set_tags(client, ids[1], {"wsss.tune_path": path})
    log.info("resuming %s from %s", name, path)

    def factory(lock_actor: str | None, callback: RunStatusCallback) -> tune.Tuner:
        settings = _settings(options, space, base, ids, lock_actor)
        return _restored(path, _trainable(settings, options), callback)

    return _run(factory, options, uri, ids)
