"""Leaderboards and exports, read from MLflow (the child runs of every search in an experiment)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import wsss
from tuner.tracking.runs import (
    ATTEMPT,
    DATA_FINGERPRINT,
    DATA_LOCATION,
    PAGE,
    PARENT_TAG,
    ROLE,
    STATUS,
    SUPERSEDED,
    TRIAL_ID,
    iter_runs,
)

COLUMNS = (
    "rank",
    "trial",
    "method",
    "objective",
    "cam_miou_best",
    "pseudo_miou",
    "val_miou",
    "status",
    "rung",
    "compute_seconds",
    "compute_seconds_without_reuse",
    "stages_reused",
    "space",
    "attempt",
    "superseded",
    "run_id",
)
# What the terminal table shows; files get every column.
TABLE_COLUMNS = tuple(
    c
    for c in COLUMNS
    if c not in ("compute_seconds_without_reuse", "space", "attempt", "superseded", "run_id")
)
_STATUS = {"FINISHED": "finished", "KILLED": "pruned", "FAILED": "failed"}


def _row(run: Any) -> dict[str, Any]:
    metrics, tags = run.data.metrics, run.data.tags
    return {
        "trial": run.info.run_name,
        "method": tags.get("wsss.method", "?"),
        "objective": metrics.get(tags.get("wsss.metric", "val_miou"))
        if run.info.status == "FINISHED"
        else None,
        "cam_miou_best": metrics.get("cam_miou_best"),
        "pseudo_miou": metrics.get("pseudo_miou"),
        "val_miou": metrics.get("val_miou"),
        "short_val_miou": metrics.get("short_val_miou"),
        "status": tags.get(STATUS) or _STATUS.get(run.info.status, run.info.status.lower()),
        # A staged search's configuration: the highest rung it reached (tuner.trial.job); else "-".
        "rung": tags.get("wsss.rung", "-"),
        "compute_seconds": round(metrics.get("compute_seconds", 0.0), 1),
        "compute_seconds_without_reuse": round(metrics.get("compute_seconds_without_reuse", 0.0), 1),
        "stages_reused": tags.get("wsss.reused", "-"),
        "space": tags.get("wsss.space", "?"),
        "attempt": int(tags.get(ATTEMPT, "1")) if tags.get(ATTEMPT, "1").isdigit() else 1,
        "superseded": tags.get(SUPERSEDED) == "true",
        "run_id": run.info.run_id,
        "_mode": tags.get("wsss.mode", "max"),
        "_start": run.info.start_time,
        "_trial": (tags.get(PARENT_TAG), tags.get(TRIAL_ID) or run.info.run_id),
    }


def latest_attempts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial of each search: its current attempt (not superseded, latest started)."""
    latest: dict[Any, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["_trial"])
        if seen is None or (not row["superseded"], row["_start"]) > (not seen["superseded"], seen["_start"]):
            latest[row["_trial"]] = row
    return list(latest.values())


def _search_objective(client: MlflowClient, experiment_id: str) -> tuple[str, str] | None:
    """(metric, mode) shared by every search of the experiment, or None if they differ."""
    searches = list(iter_runs(client, [experiment_id], f"tags.`{ROLE}` = 'search'"))
    pairs = {(r.data.tags.get("wsss.metric", "val_miou"), r.data.params.get("mode", "max")) for r in searches}
    return pairs.pop() if len(pairs) == 1 else None


def _top_finished(
    client: MlflowClient, experiment_id: str, top: int, objective: tuple[str, str]
) -> list[dict[str, Any]]:
    """The best `top` finished trials, ordered by the server and read page by page until found."""
    metric, mode = objective
    order = [f"metrics.`{metric}` {'DESC' if mode == 'max' else 'ASC'}", "attributes.start_time ASC"]
    query = f"tags.`{ROLE}` = 'trial' and attributes.status = 'FINISHED'"
    rows: list[dict[str, Any]] = []
    page = min(PAGE, max(2 * top, 50))  # a trial rarely has more than one run: small pages suffice
    for run in iter_runs(client, [experiment_id], query, order_by=order, page=page):
        rows.append(_row(run))
        if len(latest_attempts(rows)) >= top:
            break
    return latest_attempts(rows)


def leaderboard(
    client: MlflowClient,
    experiment: str,
    top: int | None = None,
    by: str | None = None,
    all_attempts: bool = False,
) -> list[dict[str, Any]]:
    """Finished trials ranked by their objective (within each method with by='method'), then the
    pruned and failed ones, furthest stage first. One row per trial; every run of a trial (runs of
    earlier versions that opened one per attempt) with `all_attempts`.

    Runs are read page by page (MLflow's search pages), however many there are; with `top` (and
    no grouping), the server orders finished trials by the metric and only the pages needed are read.
    """
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise wsss.ConfigError(
            f"--experiment {experiment}: no such MLflow experiment at {client.tracking_uri}"
        )
    if by not in (None, "method"):
        raise wsss.ConfigError(f"--by {by}: only 'method' is supported")
    if top is not None and by is None and not all_attempts:
        objective = _search_objective(client, found.experiment_id)
        if objective is not None:
            best = _top_finished(client, found.experiment_id, top, objective)
            if len(best) >= top:
                return rank_rows(best, top)
    runs = iter_runs(client, [found.experiment_id], f"tags.`{ROLE}` = 'trial'")
    rows = [_row(r) for r in runs]
    return rank_rows(rows if all_attempts else latest_attempts(rows), top, by)


def kept_stage_keys(client: MlflowClient, experiment: str, top: int) -> set[tuple[str, str]]:
    """(stage, key) of every stage the `top` best finished trials of the experiment used."""
    keep: set[tuple[str, str]] = set()
    for row in leaderboard(client, experiment, top=top):
        if row["status"] != "finished":
            continue
        tags = client.get_run(row["run_id"]).data.tags
        keep |= {(stage, tags[f"wsss.key.{stage}"]) for stage in wsss.STAGES if f"wsss.key.{stage}" in tags}
    return keep


# Stage metrics in pipeline order: how far an unfinished trial got, and how well it did there.
# How far an unfinished trial got (short_val_miou: a staged search's short DeepLab rung).
_STAGE_METRICS = ("cam_miou_best", "pseudo_miou", "short_val_miou")


def _order(row: dict[str, Any], by: str | None) -> tuple[Any, ...]:
    group = row["method"] if by else ""
    if row["objective"] is not None:
        sign = -1.0 if row["_mode"] == "max" else 1.0
        return (group, 0, 0, sign * row["objective"], row["_start"])
    # Pruned and failed trials: the ones that got further first, then the better at their last
    # stage (stage metrics are mIoUs, higher is better whatever the search's mode).
    reached = [row[m] for m in _STAGE_METRICS if row.get(m) is not None]
    return (group, 1, -len(reached), -(reached[-1] if reached else 0.0), row["_start"])


def rank_rows(
    rows: list[dict[str, Any]], top: int | None = None, by: str | None = None
) -> list[dict[str, Any]]:
    """Rank leaderboard rows: finished by objective, then unfinished by progress and last stage metric."""
    if by not in (None, "method"):
        raise wsss.ConfigError(f"--by {by}: only 'method' is supported")
    ranked: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: _order(r, by)):
        group = row["method"] if by else ""
        counters[group] = counters.get(group, 0) + 1
        if top is None or counters[group] <= top:
            ranked.append({"rank": counters[group], **{k: row[k] for k in COLUMNS if k != "rank"}})
    return ranked


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in COLUMNS})


def write_leaderboard(rows: list[dict[str, Any]], fmt: str, out: Path | None) -> str | None:
    """csv/parquet/json to `out` (atomically) or, for csv/json, as text to return."""
    if fmt == "parquet" and out is None:
        raise wsss.ConfigError("--format parquet: needs --out FILE")
    table = to_table(rows)
    if out is None:
        if fmt == "json":
            return wsss.strict_json(rows, indent=1)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        return sink.getvalue().to_pybytes().decode()
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if fmt == "parquet":
        pq.write_table(table, tmp)
    elif fmt == "csv":
        pacsv.write_csv(table, tmp)
    else:
        tmp.write_text(wsss.strict_json(rows, indent=1))
    os.replace(tmp, out)
    return None


def _exportable_run(client: MlflowClient, experiment: str, rank: int, run_id: str | None) -> tuple[Any, Any]:
    """(leaderboard row or None, MLflow run) of `--run-id`, or of the rank-th finished trial."""
    if run_id is not None:
        found = client.get_experiment_by_name(experiment)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            run = None
        if found is None or run is None or run.info.experiment_id != found.experiment_id:
            raise wsss.ConfigError(f"--run-id {run_id}: no such trial run in experiment {experiment!r}")
        if run.data.tags.get(ROLE) != "trial":
            raise wsss.ConfigError(f"--run-id {run_id}: not a trial run (it is the search's own run)")
        return _row(run), run
    finished = [r for r in leaderboard(client, experiment) if r["status"] == "finished"]
    if not 1 <= rank <= len(finished):
        raise wsss.ConfigError(f"--rank {rank}: the experiment has {len(finished)} finished trial(s)")
    row = finished[rank - 1]
    return row, client.get_run(row["run_id"])


def export_config(
    client: MlflowClient, experiment: str, rank: int, out: Path, run_id: str | None = None
) -> dict[str, Any]:
    """Write a trial's config (the rank-th finished trial, or the run `run_id` of any listed row), with
    its provenance and the data it ran on, as YAML `wsss run` accepts."""
    row, run = _exportable_run(client, experiment, rank, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run.info.run_id, "config.yaml", tmp)
            config = wsss.load_yaml(wsss.read_text(Path(local), wsss.ConfigError))
        except (MlflowException, OSError) as exc:
            raise wsss.ConfigError(
                f"run {run.info.run_id} ({row['trial']}, {row['status']}): no config.yaml to export; the "
                f"trial ended before logging it ({str(exc).splitlines()[0][:200]})"
            ) from None
        except yaml.YAMLError:
            raise wsss.ConfigError(
                f"run {run.info.run_id}: its config.yaml artifact is not valid YAML"
            ) from None
    if not isinstance(config, dict):
        raise wsss.ConfigError(f"run {run.info.run_id}: its config.yaml artifact is not a config mapping")
    # Keep the trial's thread count: torch's CPU results depend on it, so a fresh run matches exactly.
    config["runtime"] = {**config.get("runtime", {}), "progress": True}
    tags = run.data.tags
    metric = tags.get("wsss.metric", "val_miou")
    provenance = {
        "experiment": experiment,
        "run_id": run.info.run_id,
        "trial": row["trial"],
        "search_run_id": tags.get(PARENT_TAG),
        "status": row["status"],
        "metric": metric,
        "value": row["objective"],
        "metrics": {k: row[k] for k in ("cam_miou_best", "pseudo_miou", "val_miou")},
        "tracking_uri": client.tracking_uri,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if DATA_FINGERPRINT in tags:  # trials of earlier versions did not record their data
        provenance["data"] = {"fingerprint": tags[DATA_FINGERPRINT], "location": tags.get(DATA_LOCATION)}
    text = yaml.safe_dump({wsss.PROVENANCE_KEY: provenance, **config}, sort_keys=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp_out.write_text(text)
    try:
        wsss.load_config(tmp_out)  # never publish a file `wsss run` would refuse
    except wsss.ConfigError:
        tmp_out.unlink()
        raise
    os.replace(tmp_out, out)
    return provenance
