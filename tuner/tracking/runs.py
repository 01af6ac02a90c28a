"""MLflow bookkeeping: one parent run per search on the driver, one child run per trial from the worker.

Workers log through `MLFLOW_TRACKING_URI` (set for them through the Ray runtime environment). A trial
that the scheduler stops is abandoned mid-thread by Ray and cannot end its own run, so the driver
settles every child run's status when Tune reports the trial done (`RunStatusCallback`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

import wsss
from tuner.tracking.backup import sqlite_problem
from tuner.tracking.write_queue import WriteQueue

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
ROLE, TRIAL_ID, STATUS = "wsss.role", "wsss.trial_id", "wsss.status"
# A trial that runs again (retried, resumed) continues its run; `wsss.attempt` counts the attempts and
# `wsss.attempt_uid` names the current one. Runs tagged superseded come from earlier versions of
# wsss-tune, which opened a new run per attempt.
ATTEMPT, ATTEMPT_UID, SUPERSEDED = "wsss.attempt", "wsss.attempt_uid", "wsss.superseded"
DATA_FINGERPRINT, DATA_LOCATION = "wsss.data.fingerprint", "wsss.data.location"
FINAL_ITERATION = len(("seed", "refine", "segment"))
# What trials report to Tune besides `objective` (see tuner.trial.trainable.TUNE_KEYS).
# holdout_miou: the val images no trial is chosen on (data.holdout_split), when the data has them.
# In a staged search's Tune config: the rung job a trial runs (tuner.search.job_searcher). Every job
# of one configuration writes to that configuration's one run, keyed `config-<n>` instead of the trial.
JOB_KEY = "wsss_job"
JOBS = "wsss.jobs"  # a configuration run's count of jobs (where a trial's run counts attempts)


def run_key(trial_id: str, config: dict[str, Any]) -> str:
    """The TRIAL_ID tag of the run a Tune trial writes to: its own id, or its configuration's."""
    job = config.get(JOB_KEY)
    return f"config-{job['config']}" if isinstance(job, dict) else trial_id


TUNE_METRICS = ("cam_miou_best", "pseudo_miou", "val_miou", "holdout_miou", "compute_seconds")
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100  # MLflow's log_batch limits


def resolve_tracking_uri(given: str | None, workdir: Path) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else an absolute sqlite file in the working directory.

    MLflow 3 refuses file stores (`./mlruns`), and a relative sqlite path would land in each trial's
    own working directory, so neither is accepted.
    """
    uri = given or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(workdir / 'mlflow.db').absolute()}"
    if uri.startswith("file:") or "://" not in uri:
        raise wsss.ConfigError(
            f"--tracking-uri {uri}: MLflow 3 refuses file stores; use sqlite:////abs/path/mlflow.db or http://host:5000"
        )
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        raise wsss.ConfigError(
            f"--tracking-uri {uri}: give an absolute sqlite path (sqlite:////abs/path/mlflow.db)"
        )
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def existing_tracking_uri(given: str | None, workdir: Path) -> str:
    """The tracking URI for reading an earlier search: a sqlite database must already exist (reading
    must not leave an empty one behind) and be MLflow's."""
    uri = resolve_tracking_uri(given, workdir)
    database = _sqlite_path(uri)
    if database is not None and not database.is_file():
        raise wsss.ConfigError(
            f"{database}: no MLflow database; pass the search's --storage or --tracking-uri"
        )
    if database is not None and (problem := sqlite_problem(database)) is not None:
        raise wsss.ConfigError(f"{database}: not an MLflow database ({problem})")
    return uri


def check_database(uri: str) -> None:
    """A sqlite file the URI names must be an MLflow database if it exists and holds anything (an
    empty or missing one is created by MLflow)."""
    database = _sqlite_path(uri)
    if database is None or not database.exists() or not database.stat().st_size:
        return
    if (problem := sqlite_problem(database)) is not None:
        raise wsss.ConfigError(f"{database}: not an MLflow database ({problem})")


@contextlib.contextmanager
def tracking_database(uri: str) -> Iterator[MlflowClient]:
    """A client whose database is ready, held alone while the block runs: MLflow creates and migrates
    a sqlite database's schema when a client first opens it, and two searches starting at once (two
    experiments, one new database) would both migrate it and one would fail. Servers need no lock."""
    database = _sqlite_path(uri)
    if database is None:
        yield MlflowClient(uri)
        return
    check_database(uri)
    database.parent.mkdir(parents=True, exist_ok=True)
    with (database.parent / f".{database.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield MlflowClient(uri)


# MLflow 3's UI tells GenAI experiments (traces, evaluation runs) from model development by this tag;
# a search's experiment is model development: runs, their metrics and their parent-child tree.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
NOTE = "mlflow.note.content"  # a run's description in MLflow's UI


def ensure_experiment(client: MlflowClient, name: str, artifact_dir: Path) -> str:
    """The experiment's id, creating it if needed. With a database URI artifacts go to `artifact_dir`;
    with a tracking server they go where the server says (proxied with --serve-artifacts)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    local = client.tracking_uri.startswith(("sqlite:", "postgresql", "mysql"))
    try:
        return str(
            client.create_experiment(
                name,
                artifact_location=artifact_dir.absolute().as_uri() if local else None,
                tags=EXPERIMENT_TAGS,
            )
        )
    except MlflowException:
        found = client.get_experiment_by_name(name)  # another search created it a moment ago
        if found is None:
            raise
        return str(found.experiment_id)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}.{key}" if prefix else key
        out |= flatten(value, path) if isinstance(value, dict) else {path: value}
    return out


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), _BATCH_PARAMS):
        client.log_batch(run_id, params=items[i : i + _BATCH_PARAMS])


def log_metrics(
    client: MlflowClient, run_id: str, metrics: dict[str, float], step: int, timestamp: int
) -> None:
    items = [Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
    for i in range(0, len(items), _BATCH_METRICS):
        client.log_batch(run_id, metrics=items[i : i + _BATCH_METRICS])


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, str]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


PAGE = 1000  # runs per MLflow search request (the server's page limit for search_runs)


def iter_runs(
    client: MlflowClient,
    experiment_ids: list[str],
    filter_string: str,
    order_by: list[str] | None = None,
    page: int = PAGE,
) -> Iterator[Any]:
    """Every run matching the filter, read page by page (never silently cut at a maximum)."""
    token = None
    while True:
        runs = client.search_runs(
            experiment_ids, filter_string, max_results=page, order_by=order_by, page_token=token
        )
        yield from runs
        token = runs.token
        if not token:
            return


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> list[Any]:
    query = f"tags.`{ROLE}` = 'trial'" + (
        f" and tags.`{PARENT_TAG}` = '{parent_run_id}'" if parent_run_id else ""
    )
    return list(iter_runs(client, [experiment_id], query))


def _error_line(trial: Any) -> str:
    """The last line of the trial's error (the exception and its message), as Ray recorded it."""
    try:
        error = trial.get_pickled_error() or trial.get_error()
    except (OSError, EOFError, ValueError, TypeError):
        error = None
    if error is None:
        return "the trial failed (see its error.txt in the Tune experiment folder)"
    return wsss.user_message(getattr(error, "cause", None) or error).strip().splitlines()[-1]


class RunStatusCallback(tune.Callback):
    """Ends each trial's child run FINISHED, FAILED or KILLED (pruned) once Tune reports it done.

    Best-effort: its writes go through a WriteQueue (retried in the background), so neither an MLflow
    outage nor an error here can stop the search; `close` waits for them at the end. Pickled into
    Tune's experiment state without the writes (only strings).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        final_iteration: int = FINAL_ITERATION,
    ) -> None:
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.final_iteration = final_iteration  # stage reports of a finished trial (the metric's stage)
        self._writes: WriteQueue | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_writes"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__ |= state | {"_writes": None}

    @property
    def writes(self) -> WriteQueue:
        if self._writes is None:
            self._writes = WriteQueue(self.tracking_uri, "search")
        return self._writes

    def close(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every settle to go through."""
        return self._writes is None or self._writes.close(timeout)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._submit(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._submit(trial, error=_error_line(trial))

    def _submit(self, trial: Any, error: str | None) -> None:
        trial_id, name, last = (
            run_key(trial.trial_id, trial.config),
            str(trial),
            dict(trial.last_result or {}),
        )
        self.writes.submit(
            f"settle trial {name}", lambda client: self.settle(client, trial_id, name, last, error)
        )

    def settle(
        self,
        client: MlflowClient,
        trial_id: str,
        trial_name: str,
        last_result: dict[str, Any],
        error: str | None,
    ) -> None:
        """End the current attempt's run if it is still RUNNING (a pruned trial cannot end its own).

        Runs that have ended keep their status: the worker knows better how its run ended. The stage
        values Tune received are written too, in case the trial's own writes were lost in an outage.
        """
        runs = attempts(client, self.experiment_id, self.parent_run_id, trial_id)
        current = [r for r in runs if r.data.tags.get(SUPERSEDED) != "true"]
        if current:
            run = max(current, key=lambda r: r.info.start_time)
        else:  # this attempt failed before it could open a run: record it anyway, so nothing goes missing
            tags = {ROLE: "trial", TRIAL_ID: trial_id, PARENT_TAG: self.parent_run_id, ATTEMPT: "1"}
            run = client.create_run(self.experiment_id, run_name=trial_name, tags=tags)
        reached = int(last_result.get("training_iteration", 0) or 0)
        if error is not None:
            status, label = "FAILED", "failed"
        elif reached < getattr(self, "final_iteration", FINAL_ITERATION):
            status, label = "KILLED", "pruned"
        else:
            status, label = "FINISHED", "finished"
        missing = {
            k: float(v)
            for k, v in last_result.items()
            if k in TUNE_METRICS and k not in run.data.metrics and isinstance(v, int | float)
        }
        if missing:
            log_metrics(client, run.info.run_id, missing, step=reached, timestamp=int(time.time() * 1000))
        if run.info.status != "RUNNING":
            return
        tags = {STATUS: label}
        if error and "wsss.error" not in run.data.tags:  # the worker's own message is the better one
            tags["wsss.error"] = error[:5000]
        set_tags(client, run.info.run_id, tags)
        client.set_terminated(run.info.run_id, status)


def attempts(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str) -> list[Any]:
    """Every run of one trial of one search: one per attempt."""
    query = f"tags.`{TRIAL_ID}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return list(iter_runs(client, [experiment_id], query))


def close_dangling(client: MlflowClient, experiment_id: str, parent_run_id: str) -> int:
    """Child runs still RUNNING after the search (their trial never reported back) end FAILED."""
    dangling = [r for r in child_runs(client, experiment_id, parent_run_id) if r.info.status == "RUNNING"]
    for run in dangling:
        set_tags(client, run.info.run_id, {STATUS: "failed", "wsss.error": "the trial never reported back"})
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    return len(dangling)


def log_files(
    client: MlflowClient, run_id: str, paths: Iterable[Path], artifact_path: str | None = None
) -> None:
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)
