"""MLflow bookkeeping: one parent run per search on the driver, one child run per trial from the worker.

Workers log through `MLFLOW_TRACKING_URI` (set for them through the Ray runtime environment). A trial
that the scheduler stops is abandoned mid-thread by Ray and cannot end its own run, so the driver
settles every child run's status when Tune reports the trial done (`RunStatusCallback`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

import wsss

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
ROLE, TRIAL_ID, STATUS = "wsss.role", "wsss.trial_id", "wsss.status"
# A trial that runs again (resumed, retried) gets a new run; the earlier ones are marked superseded.
ATTEMPT, SUPERSEDED = "wsss.attempt", "wsss.superseded"
DATA_FINGERPRINT, DATA_LOCATION = "wsss.data.fingerprint", "wsss.data.location"
FINAL_ITERATION = len(("seed", "refine", "segment"))
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


def existing_tracking_uri(given: str | None, workdir: Path) -> str:
    """The tracking URI for reading an earlier search: a sqlite database must already exist (reading
    must not leave an empty one behind)."""
    uri = resolve_tracking_uri(given, workdir)
    database = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not database.is_file():
        raise wsss.ConfigError(
            f"{database}: no MLflow database; pass the search's --storage or --tracking-uri"
        )
    return uri


def ensure_experiment(client: MlflowClient, name: str, artifact_dir: Path) -> str:
    """The experiment's id, creating it if needed. With a database URI artifacts go to `artifact_dir`;
    with a tracking server they go where the server says (proxied with --serve-artifacts)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    local = client.tracking_uri.startswith(("sqlite:", "postgresql", "mysql"))
    return str(
        client.create_experiment(name, artifact_location=artifact_dir.absolute().as_uri() if local else None)
    )


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


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str | None = None) -> list[Any]:
    query = f"tags.`{ROLE}` = 'trial'" + (
        f" and tags.`{PARENT_TAG}` = '{parent_run_id}'" if parent_run_id else ""
    )
    return list(client.search_runs([experiment_id], filter_string=query, max_results=50000))


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

    Holds only strings, so Tune can pickle it into the experiment state.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.settle(trial.trial_id, str(trial), trial.last_result or {}, error=None)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.settle(trial.trial_id, str(trial), trial.last_result or {}, error=_error_line(trial))

    def settle(self, trial_id: str, trial_name: str, last_result: dict[str, Any], error: str | None) -> None:
        """End the current attempt's run if it is still RUNNING (a pruned trial cannot end its own).

        Runs that have ended keep their status: the worker knows better how its run ended, and runs of
        earlier attempts (superseded) are history, never rewritten.
        """
        client = MlflowClient(self.tracking_uri)
        runs = attempts(client, self.experiment_id, self.parent_run_id, trial_id)
        current = [r for r in runs if r.data.tags.get(SUPERSEDED) != "true"]
        if current:
            run = max(current, key=lambda r: r.info.start_time)
        else:  # this attempt failed before it could open a run: record it anyway, so nothing goes missing
            tags = {
                ROLE: "trial",
                TRIAL_ID: trial_id,
                PARENT_TAG: self.parent_run_id,
                ATTEMPT: str(len(runs) + 1),
            }
            run = client.create_run(self.experiment_id, run_name=trial_name, tags=tags)
        reached = int(last_result.get("training_iteration", 0) or 0)
        if error is not None:
            status, label = "FAILED", "failed"
        elif reached < FINAL_ITERATION:
            status, label = "KILLED", "pruned"
        else:
            status, label = "FINISHED", "finished"
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
    return list(client.search_runs([experiment_id], filter_string=query))


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
