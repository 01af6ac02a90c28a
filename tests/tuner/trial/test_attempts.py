"""A trial that runs again (a resumed search reruns its failed trials; Tune retries one lost with its
node) continues its own MLflow run: one run per trial, `wsss.attempt` counting the attempts, the
earlier error kept as `wsss.previous_error`; the leaderboard shows one row per trial, and every listed
row exports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import wsss
from tests.tuner.helpers import write_space
from tuner.tracking.results import export_config, leaderboard

pytestmark = pytest.mark.ray  # starts a Ray cluster (or a Tune run on one); not in the fast lane

SAMPLES = 3


def _trial_runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], "tags.`wsss.role` = 'trial'")


def test_trials_failed_by_a_lost_dataset_rerun_in_their_own_runs_on_resume(
    tiny_data_dir: Path, tmp_path: Path
) -> None:
    space = write_space(tmp_path, "rerun", params={"refine.beta": {"float": [4.0, 16.0]}})
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    storage, uri = tmp_path / "storage", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "WSSS_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": uri}
    common = ["--experiment", "attempts", "--storage", str(storage)]
    command = [sys.executable, "-m", "tuner.cli.main", "search", str(space), "--samples", str(SAMPLES)]
    command += ["--data", str(data), "--reduction-factor", "100", "--max-failures", "0", *common]
    search = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    client = MlflowClient(uri)
    deadline = time.monotonic() + 240
    while not any(r.info.status == "FINISHED" for r in _trial_runs(client, "attempts")):
        assert search.poll() is None, search.stdout.read() if search.stdout else ""
        assert time.monotonic() < deadline, "the first trial did not finish"
        time.sleep(0.05)
    data.rename(tmp_path / "data-away")  # the dataset's mount goes away: the next trials fail
    out, _ = search.communicate(timeout=300)
    assert search.returncode == 0, out  # the first trial finished
    runs = _trial_runs(client, "attempts")
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(runs) == SAMPLES and len(failed) == SAMPLES - 1
    assert all(r.data.tags["wsss.error"] for r in failed)

    (tmp_path / "data-away").rename(data)  # the mount is back
    resumed = subprocess.run(
        [sys.executable, "-m", "tuner.cli.main", "resume", *common],
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    runs = {r.info.run_id: r for r in _trial_runs(client, "attempts")}
    assert len(runs) == SAMPLES  # one run per trial: the reruns continued the failed runs
    for old in failed:
        now = runs[old.info.run_id]
        assert now.info.status == "FINISHED" and now.data.tags["wsss.status"] == "finished"
        assert now.data.tags["wsss.attempt"] == "2" and "wsss.error" not in now.data.tags
        assert now.data.tags["wsss.previous_error"] == old.data.tags["wsss.error"]
        assert now.data.metrics["val_miou"] >= 0

    rows = leaderboard(client, "attempts")
    assert len(rows) == SAMPLES and {r["status"] for r in rows} == {"finished"}
    assert sorted(r["attempt"] for r in rows) == [1, 2, 2]
    for row in rows:  # every listed row exports, and the export runs as-is
        out_file = tmp_path / f"{row['run_id']}.yaml"
        provenance = export_config(client, "attempts", 1, out_file, run_id=row["run_id"])
        assert provenance["run_id"] == row["run_id"] and wsss.load_config(out_file).refine.beta > 0
