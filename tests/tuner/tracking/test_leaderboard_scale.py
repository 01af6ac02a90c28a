"""Leaderboards over thousands of trial runs: read page by page, ordered by the server when only the
top is wanted, and never cut at a maximum."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tuner.tracking.results import leaderboard
from tuner.tracking.runs import iter_runs

FINISHED, PRUNED, FAILED = 2000, 300, 200


class CountingClient(MlflowClient):
    """A real client that counts its search requests."""

    searches = 0

    def search_runs(self, *args: Any, **kwargs: Any) -> Any:
        self.searches += 1
        return super().search_runs(*args, **kwargs)


@pytest.fixture(scope="module")
def big_experiment() -> Iterator[tuple[str, dict[str, float]]]:
    """A sqlite MLflow database (on tmpfs when there is one) with one search and 2,500 trial runs."""
    folder = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("big", artifact_location=(folder / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"wsss.role": "search", "wsss.metric": "val_miou"})
    client.log_batch(parent.info.run_id, params=[Param("mode", "max")])
    rng = random.Random(0)
    values: dict[str, float] = {}
    for i in range(FINISHED + PRUNED + FAILED):
        tags = {"wsss.role": "trial", "mlflow.parentRunId": parent.info.run_id, "wsss.trial_id": f"t{i}"}
        tags |= {"wsss.metric": "val_miou", "wsss.mode": "max", "wsss.method": "cam"}
        run = client.create_run(experiment, run_name=f"trial_{i:05d}", tags=tags)
        metrics = [Metric("cam_miou_best", rng.random(), 0, 1)]
        if i < FINISHED:
            values[run.info.run_id] = rng.random()
            metrics.append(Metric("val_miou", values[run.info.run_id], 0, 3))
        client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag("wsss.reused", "-")])
        client.set_terminated(
            run.info.run_id, "FINISHED" if i < FINISHED else "KILLED" if i < FINISHED + PRUNED else "FAILED"
        )
    yield uri, values
    shutil.rmtree(folder, ignore_errors=True)


def test_every_run_is_read_page_by_page(big_experiment: tuple[str, dict[str, float]]) -> None:
    uri, _ = big_experiment
    client = CountingClient(uri)
    experiment = client.get_experiment_by_name("big").experiment_id
    ids = [r.info.run_id for r in iter_runs(client, [experiment], "tags.`wsss.role` = 'trial'", page=300)]
    assert len(ids) == len(set(ids)) == FINISHED + PRUNED + FAILED
    assert client.searches == 9  # 2,500 runs in pages of 300


def test_full_leaderboard_ranks_every_trial(big_experiment: tuple[str, dict[str, float]]) -> None:
    uri, values = big_experiment
    rows = leaderboard(MlflowClient(uri), "big")
    assert len(rows) == FINISHED + PRUNED + FAILED
    best_first = sorted(values, key=values.get, reverse=True)
    assert [r["run_id"] for r in rows[:FINISHED]] == best_first
    rest = [r["status"] for r in rows[FINISHED:]]
    assert rest.count("pruned") == PRUNED and rest.count("failed") == FAILED
    last_stage = [r["cam_miou_best"] for r in rows[FINISHED:]]
    assert last_stage == sorted(last_stage, reverse=True)  # unfinished: better at their last stage first


def test_top_rows_are_ordered_by_the_server_and_read_from_the_first_page(
    big_experiment: tuple[str, dict[str, float]],
) -> None:
    uri, values = big_experiment
    client = CountingClient(uri)
    rows = leaderboard(client, "big", top=10)
    assert [r["run_id"] for r in rows] == sorted(values, key=values.get, reverse=True)[:10]
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert client.searches == 2  # the searches' objective, then one page of finished trials
