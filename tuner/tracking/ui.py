"""A search's leaderboard as MLflow's UI (3.17) opens it: one link to a shared view of the runs table.

Rendered in a headless browser (tests/benchmarks/check_mlflow_ui.py), MLflow 3.17 opens every
experiment in its GenAI workflow, on a traces overview: the "GenAI / Model training" switch lives in
the browser's local storage (default GenAI), and while that switch exists the UI does not read the
experiment's `mlflow.experimentKind` tag. Switched to model training, the runs table shows only the
search's parent run, collapsed, without a metric column. Nothing on the server changes those
defaults; what it can give is a shared view: an experiment tag `mlflow.sharedViewState.<key>`
holding the runs table's state (filter, sort, columns) as JSON, which the UI applies when a URL names
the key (`viewStateShareKey`, the UI's own "share view" mechanism). With `workflowType=
machine_learning` in the same URL, one link opens the leaderboard: the trials, best first, with the
search metric, the stage proxies and the compute in columns. The parent run's description and the
driver's last lines print that link.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from mlflow.tracking import MlflowClient

SHARED_VIEW = "mlflow.sharedViewState."

# Shown after the search metric: each stage's proxy, the rung (staged searches), the compute spent.
_COLUMNS = ("pseudo_miou", "cam_miou_best", "rung", "compute_seconds")
_TAGS = ("wsss.method", "wsss.status")


_KEY = "wsss-leaderboard-"


def view_key(metric: str) -> str:
    return f"{_KEY}{metric}"


def leaderboard_view(metric: str, mode: str) -> dict[str, object]:
    """The runs table's state: the search's trials (one run per trial or configuration), best first."""
    metrics = [metric, *(m for m in _COLUMNS if m != metric)]
    return {
        "searchFilter": "tags.`wsss.role` = 'trial'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": mode == "min",
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": [f"metrics.`{m}`" for m in metrics] + [f"tags.`{t}`" for t in _TAGS],
    }


def view_tag(metric: str, mode: str) -> tuple[str, str]:
    """(experiment tag, value) that shares the leaderboard view of a search on `metric`."""
    return f"{SHARED_VIEW}{view_key(metric)}", json.dumps(leaderboard_view(metric, mode))


def leaderboard_path(experiment_id: str, metric: str) -> str:
    """The UI route of the leaderboard, after the server's address."""
    query = f"workflowType=machine_learning&viewStateShareKey={quote(view_key(metric))}"
    return f"/#/experiments/{experiment_id}/runs?{query}"


def leaderboard_link(tracking_uri: str, experiment_id: str, metric: str) -> str:
    """The leaderboard's address: whole for a tracking server, after `mlflow ui`'s address for a
    database (the UI then runs wherever the user starts it)."""
    path = leaderboard_path(experiment_id, metric)
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/") + path
    return f"http://127.0.0.1:5000{path} (after `mlflow ui --backend-store-uri {tracking_uri}`)"


def experiment_links(client: MlflowClient, experiment: str) -> list[str]:
    """The leaderboard links of an experiment's searches (one per search metric), if any."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    prefix = SHARED_VIEW + _KEY
    metrics = sorted(k.removeprefix(prefix) for k in found.tags if k.startswith(prefix))
    return [leaderboard_link(client.tracking_uri, str(found.experiment_id), m) for m in metrics]
