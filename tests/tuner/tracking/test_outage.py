"""An MLflow outage in the middle of a search (the server process stopped, then started again on the
same database) fails neither a trial nor the search: the trials' writes wait and go through when the
server is back, statuses are settled, and no run is left RUNNING."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.tuner.helpers import MlflowServer, write_space
from tuner.search.driver import run_search
from tuner.search.options import SearchOptions

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane

SAMPLES = 3
OUTAGE_SECONDS = 15


def test_a_search_rides_out_a_tracking_server_restart(
    restartable_mlflow: MlflowServer,
    tiny_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MLflow's own HTTP retries off, so that the journals' retries are what rides the outage out.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    url = restartable_mlflow.url
    space = write_space(tmp_path, "outage", params={"refine.beta": {"float": [4.0, 16.0]}})
    options = SearchOptions(
        space_files=(str(space),),
        samples=SAMPLES,
        experiment="outage-test",
        data=str(tiny_data_dir),
        storage=str(tmp_path / "storage"),
        tracking_uri=url,
        cache_dir=str(tmp_path / "cache"),
        reduction_factor=100,
        tracking_wait=120,
    )
    client = MlflowClient(url)
    outage: list[float] = []

    def restart_the_server() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("outage-test")
            if experiment and client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'"):
                break
            time.sleep(0.1)
        outage.append(time.time())
        restartable_mlflow.stop()
        time.sleep(OUTAGE_SECONDS)
        restartable_mlflow.start()
        outage.append(time.time())

    restarter = threading.Thread(target=restart_the_server)
    restarter.start()
    parent_run_id = run_search(options)
    restarter.join()
    assert len(outage) == 2
    experiment = client.get_experiment_by_name("outage-test")
    runs = client.search_runs([experiment.experiment_id], "tags.`wsss.role` = 'trial'")
    assert len(runs) == SAMPLES
    assert {r.info.status for r in runs} == {"FINISHED"}  # none failed, none left RUNNING
    assert all("val_miou" in r.data.metrics and r.data.tags["wsss.status"] == "finished" for r in runs)
    assert client.get_run(parent_run_id).info.status == "FINISHED"
    # Stages that finished while the server was down were logged once it was back.
    stamps = [m.timestamp / 1000 for r in runs for m in client.get_metric_history(r.info.run_id, "objective")]
    assert any(outage[0] <= t <= outage[1] for t in stamps), (outage, sorted(stamps))
    for run in runs:  # every trial's config reached the artifact store
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
